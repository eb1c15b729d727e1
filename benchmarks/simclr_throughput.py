"""SimCLR training-step throughput: a plain fp32 loop (as lightly's SimCLR example writes it) against the
project's path (Lightning; bf16-mixed where the hardware computes in bf16; channels_last; on a CPU glibc's
malloc told to keep freed memory, as ``run_pretrain`` does), side by side in one run, plus the data loader's
delivery rate. Prints the CPU's model and flags, image pairs per second and the ratios.

Columns: ``plain`` (fp32, default memory format), ``project`` (what ``run_pretrain`` does on this machine),
``project fp32`` (the path of a CPU without bf16 instructions: ``MAMMO_CPU_BF16=0``), and two ablations of
it: without channels_last (``MAMMO_CHANNELS_LAST=0``) and with glibc's default malloc
(``MAMMO_KEEP_FREED_MEMORY=0``). ``--isa avx2`` runs every loop as on a CPU with AVX2 only (oneDNN and ATen
limited to AVX2 kernels, no bf16): the fp32 path most learners' laptops take.

Each loop runs in a fresh Python process, so neither inherits the other's allocator state or warm caches.

    python benchmarks/simclr_throughput.py [--sizes 224 128] [--batch 32] [--steps 6] [--rounds 2]
                                           [--isa native|avx2] [--device cpu|cuda]
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
from mammo_utils.models import FEATURE_DIMS
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.methods.simclr import SimCLRModule
from mammo_utils.pretrain.stage import pretraining_images, regions_loader
from mammo_utils.runs.devices import cpu_speedups, placement
from mammo_utils.runs.trainer import FastBf16Blocks


class RandomRegions(Dataset):
    """Ready-made regions (the project makes the two views of a batch on the device, inside the step)."""

    def __init__(self, n: int, size: int) -> None:
        self.x = torch.rand(n, 1, size, size)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], -1


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
    head = SimCLRProjectionHead(FEATURE_DIMS["resnet50"], 2048, 128).to(device)
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
    module = SimCLRModule(**{**SimCLRModule.settings(cfg), "backbone": "resnet50", "crop_size_px": size,
                             "batch_size": batch, "optimizer": "sgd", "lr": 0.06, "warmup_steps": 0})
    timer = _Timer(warmup)
    trainer = pl.Trainer(max_epochs=1, accelerator=where.accelerator, devices=1, precision=where.precision,
                         logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, limit_val_batches=0,
                         callbacks=[timer, *([FastBf16Blocks()] if where.bf16_on_cpu else [])])
    loader = DataLoader(RandomRegions(batch * (steps + warmup), size), batch_size=batch)
    trainer.fit(module, loader)
    return batch * timer.steps / (timer.end - timer.start)


def loader_rate(cfg, size: int, batch: int, batches: int) -> float:
    """Regions per second the project's real pretraining loader delivers (films in memory → random regions of
    the breast; the views are made later, on the device)."""
    cfg = replace(cfg, pretrain=replace(cfg.pretrain, batch_size=batch))
    index = pd.read_csv(run_prepare(cfg) / "preprocessed.csv", keep_default_na=False)
    train_loader = regions_loader(cfg, pretraining_images(index)[0])
    it = iter(train_loader)
    next(it)
    start, n = time.perf_counter(), 0
    for _ in range(batches):
        try:
            x0, _ = next(it)
        except StopIteration:
            it = iter(train_loader)
            x0, _ = next(it)
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
    parser.add_argument("--isa", choices=["native", "avx2"], default="native",
                        help="avx2: run every loop as on a CPU with AVX2 only and no bf16 (most laptops)")
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
               "--steps", str(args.steps), "--warmup", str(args.warmup), "--device", args.device, "--isa", args.isa]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env={**os.environ, **env}).stdout
        return float(next(line for line in out.splitlines() if line.startswith("RATE ")).split()[1])

    if args.isa == "avx2":  # every child process: kernels as on a CPU with AVX2 only, and no bf16
        os.environ.update(ONEDNN_MAX_CPU_ISA="AVX2", ATEN_CPU_CAPABILITY="avx2", MAMMO_CPU_BF16="0")
    print(cpu_line())
    print(f"device={args.device} torch={torch.__version__} threads={torch.get_num_threads()} isa={args.isa} "
          f"project: {placement(cfg).describe()}, batch={args.batch}")
    variants = {  # name -> environment of the child process
        "project": {},
        "project fp32": {"MAMMO_CPU_BF16": "0"},
        "fp32 no channels_last": {"MAMMO_CPU_BF16": "0", "MAMMO_CHANNELS_LAST": "0"},
        "fp32 default malloc": {"MAMMO_CPU_BF16": "0", "MAMMO_KEEP_FREED_MEMORY": "0"},
    }
    if args.isa == "avx2" or placement(cfg).precision == "32-true":
        variants.pop("project fp32")  # the project's own path is the fp32 one here
        variants = {k.replace("fp32 ", "project fp32, "): v for k, v in variants.items()}
    names = ["plain fp32", *variants]
    print(f"{'size':>5} {'round':>5} " + " ".join(f"{n:>22}" for n in names) + f" {'loader':>7} {'loader/step':>12}"
          "  (image pairs/s; ratio to plain in brackets)")
    summary = []
    for size in args.sizes:
        feed = loader_rate(cfg, size, args.batch, batches=6)
        ratios: dict[str, list[float]] = {n: [] for n in variants}
        for r in range(args.rounds):
            plain = child("plain", size)
            rates = {n: child("project", size, **env) for n, env in variants.items()}
            for n, v in rates.items():
                ratios[n].append(v / plain)
            cells = [f"{plain:>22.1f}"] + [f"{f'{v:.1f} ({v / plain:.2f}x)':>22}" for v in rates.values()]
            print(f"{size:>5} {r + 1:>5} " + " ".join(cells) + f" {feed:>7.1f} {feed / rates['project']:>11.2f}x",
                  flush=True)
        summary += [f"{size} px, {n}: median ratio to plain {statistics.median(v):.2f}x over {len(v)} round(s)"
                    for n, v in ratios.items()]
    print("\n".join(summary))


def cpu_line() -> str:
    """The CPU's model and the instruction-set flags that decide the speed of a CPU step."""
    from mammo_utils.runs.devices import cpu_flags

    model = "unknown CPU"
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile")
    flags = [f for f in wanted if f in cpu_flags()]
    return f"cpu={model!r} cores={os.cpu_count()} flags={' '.join(flags) or 'none of ' + ' '.join(wanted)}"


if __name__ == "__main__":
    main()
