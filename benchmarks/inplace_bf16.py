"""Element-wise kernels on bf16 CPU tensors, and what choosing among them is worth to a SimCLR step.

Why ``mammo_utils.runs.fast_cpu`` runs ReLU as an integer clamp, and the residual add and the gradient sum at each
block's input out of place, on bf16 CPU tensors. Prints

1. milliseconds per call on a (32, 256, 56, 56) channels_last tensor (layer1 of ResNet-50 at 224 px, batch 32),
   in fp32 and in bf16, with glibc's malloc keeping freed memory as the training stages do
   (``mammo_utils.runs.devices.keep_freed_memory``): ``relu`` / ``relu_`` / ReLU on the int16 view of the bits,
   ReLU's backward (``threshold_backward``) on the values and on the bits, ``add`` / ``add_`` (autograd sums
   the gradients of a tensor used twice with ``add_``);
2. image pairs per second of the SimCLR training step (bf16 autocast, channels_last, SGD) with torchvision's
   ResNet-50 and with the project's, alternating, each run in a fresh process.

    python benchmarks/inplace_bf16.py [--size 224] [--batch 32] [--steps 5] [--rounds 2] [--ablations no-fork no-bits]
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

from mammo_utils.models import FEATURE_DIMS, make_backbone
from mammo_utils.runs.devices import keep_freed_memory


def _ms(fn, repeats: int = 7) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def _kernel_row(dtype: torch.dtype, shape: tuple[int, ...]) -> list[float | None]:
    x = torch.randn(shape).to(dtype).contiguous(memory_format=torch.channels_last)
    y, out, relu_out = torch.randn_like(x), x.clone(), torch.relu(x)
    bits = dtype == torch.bfloat16  # the int16 view of a bf16 tensor's bits
    x16, y16, relu16 = (t.view(torch.int16) for t in (x, y, relu_out)) if bits else (None, None, None)
    ops = [
        lambda: torch.relu(x),
        out.relu_,
        (lambda: x16.clamp_min(0)) if bits else None,
        lambda: torch.ops.aten.threshold_backward(y, relu_out, 0),
        (lambda: torch.ops.aten.threshold_backward(y16, relu16, 0)) if bits else None,
        lambda: torch.add(x, y),
        lambda: out.add_(y),
    ]
    return [_ms(op) if op else None for op in ops]


def kernels() -> None:
    shape = (32, 256, 56, 56)
    print(f"element-wise kernels on {shape}, channels_last (ms per call, median of 7)")
    names = ("relu", "relu_", "relu bits", "relu bwd", "bwd bits", "add", "add_")
    print(f"{'dtype':>9} " + " ".join(f"{n:>9}" for n in names))
    for dtype in (torch.float32, torch.bfloat16):
        row = [f"{v:>9.1f}" if v is not None else f"{'-':>9}" for v in _kernel_row(dtype, shape)]
        print(f"{str(dtype).removeprefix('torch.'):>9} " + " ".join(row), flush=True)


VARIANTS = {
    "torchvision": "torchvision's ResNet-50 (in-place ReLU, residual add and gradient sums)",
    "project": "mammo_utils.runs.fast_cpu.use_fast_bf16_blocks(mammo_utils.models.make_backbone('resnet50'))",
    "no-fork": "project, but autograd's in-place gradient sum at each block input",
    "no-bits": "project, but PyTorch's bf16 ReLU kernels (out of place)",
}


def _backbone(variant: str) -> torch.nn.Module:
    """The ResNet-50 of ``variant``; the ablations undo one of the project's changes each."""
    from mammo_utils.runs import fast_cpu

    if variant == "torchvision":
        resnet = torchvision.models.resnet50()
        resnet.conv1 = torch.nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
        resnet.fc = torch.nn.Identity()
        return resnet
    if variant == "no-fork":
        fast_cpu._Fork.apply = staticmethod(lambda x: (x, x))
    elif variant == "no-bits":
        fast_cpu._ReLUBf16.apply = staticmethod(torch.relu)
    return fast_cpu.use_fast_bf16_blocks(make_backbone("resnet50"))


def step_rate(variant: str, size: int, batch: int, steps: int) -> float:
    """SimCLR step under bf16 autocast + channels_last with the backbone of ``variant``; pairs per second."""
    keep_freed_memory()
    model = torch.nn.Sequential(_backbone(variant), SimCLRProjectionHead(FEATURE_DIMS["resnet50"], 2048, 128))
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
    parser.add_argument("--ablations", nargs="*", choices=list(VARIANTS)[2:], default=list(VARIANTS)[2:],
                        help="project variants to time beside torchvision's and the project's ResNet-50")
    parser.add_argument("--one", choices=list(VARIANTS), help=argparse.SUPPRESS)  # a child process
    args = parser.parse_args()
    if args.one:
        print(f"RATE {step_rate(args.one, args.size, args.batch, args.steps)}")
        return
    keep_freed_memory()  # as the project's training stages run: no page faults from out-of-place allocations
    kernels()

    def child(variant: str) -> float:
        cmd = [sys.executable, __file__, "--one", variant, "--size", str(args.size), "--batch", str(args.batch),
               "--steps", str(args.steps)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        return float(next(line for line in out.splitlines() if line.startswith("RATE ")).split()[1])

    variants = ["torchvision", "project"] + list(args.ablations)
    print(f"\nSimCLR step, bf16 autocast + channels_last, {args.size} px, batch {args.batch} (image pairs/s)")
    for v in variants:
        print(f"  {v:>12}: {VARIANTS[v]}")
    against = ["torchvision"] + variants[2:]  # the project's rate over each of these
    print(f"{'round':>5} " + " ".join(f"{v:>12}" for v in variants) + "".join(f" {'project/' + v:>20}" for v in against))
    ratios: dict[str, list[float]] = {v: [] for v in against}
    for r in range(args.rounds):
        rates = {v: child(v) for v in variants}
        for v in against:
            ratios[v].append(rates["project"] / rates[v])
        print(f"{r + 1:>5} " + " ".join(f"{rates[v]:>12.2f}" for v in variants)
              + "".join(f" {ratios[v][-1]:>19.2f}x" for v in against), flush=True)
    if args.rounds:
        print("median: " + ", ".join(f"project/{v} {statistics.median(x):.2f}x" for v, x in ratios.items()))

if __name__ == "__main__":
    main()
