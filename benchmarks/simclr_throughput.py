"""SimCLR training-step throughput: a plain fp32 loop (as lightly's SimCLR example writes it) against the
project's default path (Lightning, bf16-mixed + channels_last where the hardware supports it, and on a CPU
glibc's malloc told to keep freed memory, as ``run_pretrain`` does), side by side in one run, plus the data
loader's delivery rate. Prints image pairs per second and the ratios.

Each loop runs in a fresh Python process, so neither inherits the other's allocator state or warm caches.

    python benchmarks/simclr_throughput.py [--sizes 224 128] [--batch 32] [--steps 6] [--rounds 2] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace

import pandas as pd
import pytorch_lightning as pl
import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from torch.utils.data import DataLoader, Dataset

from mammo_utils.config import load_config
from mammo_utils.devices import cpu_speedups, placement
from mammo_utils.methods.simclr import SimCLRModule
from mammo_utils.models import FEATURE_DIM
from mammo_utils.prepare import run_prepare
from mammo_utils.pretrain import dataloaders, pretraining_images
from mammo_utils.training import FastBf16Blocks


class RandomPairs(Dataset):
    """Ready-made view pairs, so the step is timed without the loader."""

    def __init__(self, n: int, size: int) -> None:
        self.x = torch.rand(n, 2, 1, size, size)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return [self.x[i, 0], self.x[i, 1]], 0


def plain_loop(size: int, batch: int, steps: int, warmup: int, device: str) -> float:
    """lightly's SimCLR example: fp32, default memory format, SGD; returns pairs per second.

    The backbone is built as the example builds it (torchvision's model minus its classifier), with ResNet-50
    for ResNet-18 and a one-channel first convolution, as the project's.
    """
    resnet = torchvision.models.resnet50()
    resnet.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    backbone = torch.nn.Sequential(*list(resnet.children())[:-1], torch.nn.Flatten()).to(device)
    head = SimCLRProjectionHead(FEATURE_DIM, 2048, 128).to(device)
    criterion = NTXentLoss()
    params = list(backbone.parameters()) + list(head.parameters())
    optimizer = torch.optim.SGD(params, lr=0.06)
    loader = DataLoader(RandomPairs(batch * (steps + warmup), size), batch_size=batch)
    start = None
    for i, ((x0, x1), _) in enumerate(loader):
        if i == warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        x0, x1 = x0.to(device), x1.to(device)
        loss = criterion(head(backbone(x0)), head(backbone(x1)))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    if device == "cuda":
        torch.cuda.synchronize()
    return batch * steps / (time.perf_counter() - start)


class _Timer(pl.Callback):
    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.steps = warmup, None, 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if batch_idx == self.warmup:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx >= self.warmup:
            self.steps += 1
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.end = time.perf_counter()


def project_path(cfg, size: int, batch: int, steps: int, warmup: int) -> float:
    """The project's SimCLRModule under Lightning with the configured precision; pairs per second."""
    cfg = replace(cfg, image_size_px=size)
    cpu_speedups(cfg)
    where = placement(cfg)
    module = SimCLRModule(channels_last=where.channels_last, batch_size=batch, optimizer="sgd", lr=0.06)
    timer = _Timer(warmup)
    trainer = pl.Trainer(max_epochs=1, accelerator=where.accelerator, devices=1, precision=where.precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer, *([FastBf16Blocks()] if where.bf16_on_cpu else [])])
    loader = DataLoader(RandomPairs(batch * (steps + warmup), size), batch_size=batch)
    trainer.fit(module, loader)
    return batch * timer.steps / (timer.end - timer.start)


def loader_rate(cfg, size: int, batch: int, batches: int) -> float:
    """Image pairs per second the project's real pretraining loader delivers (cache → two views)."""
    cfg = replace(cfg, image_size_px=size, pretrain=replace(cfg.pretrain, batch_size=batch))
    index = pd.read_csv(run_prepare(cfg) / "preprocessed.csv", keep_default_na=False)
    train_loader, _ = dataloaders(cfg, *pretraining_images(index))
    it = iter(train_loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            (x0, _), _ = next(it)
        except StopIteration:
            it = iter(train_loader)
            (x0, _), _ = next(it)
        n += len(x0)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 128])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2,
                        help="plain/project pairs per size, alternating; the summary gives the median ratio")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--one", choices=["plain", "project"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    os.environ.setdefault("MAMMO_PROGRESS", "0")
    tmp = tempfile.mkdtemp(prefix="mammo-bench-")
    try:
        _run(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _run(args, tmp: str) -> None:
    cfg = load_config("demo", "synthetic", data_dir=f"{tmp}/data", runs_dir=f"{tmp}/runs",
                      overrides=["synthetic.n_patients=40"])
    if args.one:
        size = args.sizes[0]
        rate = (plain_loop(size, args.batch, args.steps, args.warmup, args.device) if args.one == "plain"
                else project_path(cfg, size, args.batch, args.steps, args.warmup))
        print(f"RATE {rate}")
        return

    def child(which: str, size: int, **env: str) -> float:
        cmd = [sys.executable, __file__, "--one", which, "--sizes", str(size), "--batch", str(args.batch),
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout
        return float(next(line for line in out.splitlines() if line.startswith("RATE ")).split()[1])

    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} "
          f"project: {placement(cfg).describe()}, batch={args.batch}")
    # "without keep-freed" is the project's path with MAMMO_KEEP_FREED_MEMORY=0 (glibc's default malloc).
    print(f"{'size':>5} {'round':>5} {'plain fp32':>11} {'project':>8} {'ratio':>7} {'without keep-freed':>19} "
          f"{'loader':>7} {'loader/step':>12}  (image pairs/s)")
    summary = []
    for size in args.sizes:
        feed = loader_rate(cfg, size, args.batch, batches=6)
        ratios = []
        for r in range(args.rounds):
            plain = child("plain", size)
            ours = child("project", size)
            default_malloc = child("project", size, MAMMO_KEEP_FREED_MEMORY="0")
            ratios.append(ours / plain)
            print(f"{size:>5} {r + 1:>5} {plain:>11.1f} {ours:>8.1f} {ours / plain:>6.2f}x {default_malloc:>19.1f} "
                  f"{feed:>7.1f} {feed / ours:>11.2f}x", flush=True)
        summary.append(f"{size} px: median ratio {statistics.median(ratios):.2f}x over {len(ratios)} round(s)")
    print("\n".join(summary))


if __name__ == "__main__":
    main()
