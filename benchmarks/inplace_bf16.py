"""In-place against out-of-place element-wise kernels on the CPU, and what the difference costs a SimCLR step.

Why ``mammo_utils.models`` runs ReLU and the residual add out of place on bf16 CPU tensors. Prints

1. milliseconds per call of ``relu`` / ``relu_`` and ``add`` / ``add_`` on a (32, 256, 56, 56) channels_last
   tensor (layer1 of ResNet-50 at 224 px, batch 32), in fp32 and in bf16, with glibc's malloc keeping freed
   memory as the training stages do (``mammo_utils.training.keep_freed_memory``);
2. image pairs per second of the SimCLR training step (bf16 autocast, channels_last, SGD) with torchvision's
   ResNet-50 block (in place) and with the project's block, alternating, each run in a fresh process.

    python benchmarks/inplace_bf16.py [--size 224] [--batch 32] [--steps 5] [--rounds 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
import torchvision
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from mammo_utils.models import FEATURE_DIM, resnet50_backbone
from mammo_utils.training import keep_freed_memory


def _ms(fn, repeats: int = 7) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def kernels() -> None:
    shape = (32, 256, 56, 56)
    print(f"element-wise kernels on {shape}, channels_last (ms per call, median of 7)")
    print(f"{'dtype':>9} {'relu':>7} {'relu_':>7} {'add':>7} {'add_':>7}")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
        y, out = torch.randn_like(x), x.clone()
        ops = (lambda: torch.relu(x), out.relu_, lambda: torch.add(x, y), lambda: out.add_(y))  # noqa: B023
        row = [_ms(op) for op in ops]
        print(f"{str(dtype).removeprefix('torch.'):>9} " + " ".join(f"{v:>7.1f}" for v in row), flush=True)


def step_rate(block: str, size: int, batch: int, steps: int) -> float:
    """SimCLR step under bf16 autocast + channels_last; ``block`` is ``torchvision`` or ``project``."""
    keep_freed_memory()
    if block == "torchvision":
        resnet = torchvision.models.resnet50()
        resnet.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        resnet.fc = torch.nn.Identity()
        backbone = resnet
    else:
        backbone = resnet50_backbone()
    model = torch.nn.Sequential(backbone, SimCLRProjectionHead(FEATURE_DIM, 2048, 128))
    model = model.to(memory_format=torch.channels_last)
    criterion = NTXentLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.06, momentum=0.9)
    x0, x1 = (torch.rand(batch, 1, size, size).contiguous(memory_format=torch.channels_last) for _ in range(2))

    def one_step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = criterion(model(x0), model(x1))
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()

    one_step()
    one_step()
    start = time.perf_counter()
    for _ in range(steps):
        one_step()
    return batch * steps / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--one", choices=["torchvision", "project"], help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(f"RATE {step_rate(args.one, args.size, args.batch, args.steps)}")
        return
    keep_freed_memory()  # as the project's training stages run: no page faults from out-of-place allocations
    kernels()

    def child(block: str) -> float:
        cmd = [sys.executable, __file__, "--one", block, "--size", str(args.size), "--batch", str(args.batch),
               "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return float(next(line for line in out.splitlines() if line.startswith("RATE ")).split()[1])

    print(f"\nSimCLR step, bf16 autocast + channels_last, {args.size} px, batch {args.batch} (image pairs/s)")
    print(f"{'round':>5} {'torchvision block':>18} {'project block':>14} {'ratio':>7}")
    ratios = []
    for r in range(args.rounds):
        stock, ours = child("torchvision"), child("project")
        ratios.append(ours / stock)
        print(f"{r + 1:>5} {stock:>18.2f} {ours:>14.2f} {ours / stock:>6.2f}x", flush=True)
    if ratios:
        print(f"median ratio {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
