"""Where and how the networks run: the one place that chooses the device, the precision and the memory format.

Every stage asks :func:`placement` (the Lightning Trainer, the feature extractor, the predictor, the CAMs), so
a run never trains on one device and explains on another by accident.

- **accelerator** ``auto``: a CUDA GPU when there is one, else Apple's GPU (MPS) on Apple silicon, else the CPU.
- **precision** ``auto``: bf16 mixed precision on GPUs that compute in bf16 (Ampere and newer), 16-bit mixed on
  older GPUs (a T4 emulates bf16 slowly, so it gets fp16 with loss scaling), fp32 on MPS (fp16 there is
  untested by us: force it with ``MAMMO_PRECISION=16-mixed``), bf16 mixed on CPUs with bf16 instructions
  (AVX-512 BF16 or AMX), fp32 on other CPUs.
- **channels_last** memory: on GPUs (tensor cores) and on CPUs (oneDNN's convolutions prefer it, in bf16 and
  in fp32 alike: ``benchmarks/simclr_throughput.py`` measures it), not on MPS, where we could not measure it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as ``/proc/cpuinfo`` lists them (empty where there is no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX), so bf16 autocast pays off.

    ``MAMMO_CPU_BF16=0`` says no whatever the CPU has (to try the fp32 path a laptop without bf16 runs).
    """
    if os.environ.get("MAMMO_CPU_BF16") == "0":
        return False
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())


def use_cached_cuda_check() -> None:
    """Where there is no CUDA GPU, let torch answer "is CUDA available?" from its cached device count.

    Importing Lightning sets ``PYTORCH_NVML_BASED_CUDA_CHECK=1`` (so that a check does not initialise CUDA before a
    fork). Until CUDA is initialised torch does not cache that answer, and on a machine without NVIDIA's library it
    tries to load the library again at every check, and every optimiser step checks (torch's graph-capture health
    check): it doubled the cost of an AdamW step of the linear probes, which take tens of thousands. With no GPU
    there is nothing a fork could inherit, so the plain check is used; with a GPU nothing changes.
    """
    if os.environ.get("PYTORCH_NVML_BASED_CUDA_CHECK") == "1" and torch.cuda.device_count() == 0:
        os.environ["PYTORCH_NVML_BASED_CUDA_CHECK"] = "0"


def cuda_available() -> bool:
    """A CUDA GPU is usable."""
    return torch.cuda.is_available()


def mps_available() -> bool:
    """Apple's GPU (Metal Performance Shaders) is usable."""
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _gpu_computes_bf16() -> bool:
    # Compute capability 8.0 (Ampere) and newer have bf16 tensor cores. torch.cuda.is_bf16_supported() also says
    # yes on older GPUs that only emulate bf16 (slowly), so ask for the capability itself.
    return torch.cuda.get_device_capability() >= (8, 0)


@dataclass(frozen=True)
class Placement:
    """How a run's networks execute.

    Attributes:
        accelerator: Lightning's name: ``gpu``, ``mps`` or ``cpu``.
        device: the torch device of that accelerator (the first one).
        precision: Lightning's precision: ``32-true``, ``bf16-mixed`` or ``16-mixed``.
        channels_last: whether weights and inputs use channels_last memory.
    """

    accelerator: str
    device: torch.device
    precision: str
    channels_last: bool

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype of :func:`torch.autocast` matching ``precision`` (None: full precision)."""
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    @property
    def bf16_on_cpu(self) -> bool:
        """bf16 on a CPU: where :mod:`mammo_utils.runs.fast_cpu` pays off."""
        return self.accelerator == "cpu" and self.precision == "bf16-mixed"

    def autocast(self) -> contextlib.AbstractContextManager:
        """``torch.autocast`` for this placement, or a no-op for full precision."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def describe(self) -> str:
        """One line for logs and reports, e.g. ``cpu, bf16-mixed, channels_last``."""
        return f"{self.accelerator}, {self.precision}" + (", channels_last" if self.channels_last else "")


def resolve_accelerator(cfg: Config) -> str:
    """``gpu``, ``mps`` or ``cpu``: ``cfg.accelerator`` unless it is ``auto``."""
    wanted = "gpu" if cfg.accelerator == "cuda" else cfg.accelerator
    if wanted != "auto":
        return wanted
    if cuda_available():
        return "gpu"
    return "mps" if mps_available() else "cpu"


def resolve_precision(cfg: Config) -> str:
    """``cfg.precision`` unless it is ``auto`` (see the module's docstring for the rule)."""
    if cfg.precision != "auto":
        return cfg.precision
    accelerator = resolve_accelerator(cfg)
    if accelerator == "gpu":
        return "bf16-mixed" if _gpu_computes_bf16() else "16-mixed"
    if accelerator == "mps":
        return "32-true"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def use_channels_last(cfg: Config) -> bool:
    """channels_last on GPUs and CPUs (oneDNN and tensor cores prefer it); not on MPS (not measured there).
    ``MAMMO_CHANNELS_LAST=0`` or ``1`` decides instead (the benchmark's ablation uses it)."""
    forced = os.environ.get("MAMMO_CHANNELS_LAST")
    if forced in ("0", "1"):
        return forced == "1"
    return resolve_accelerator(cfg) in ("gpu", "cpu")


def n_processes(cfg: Config) -> int:
    """How many training processes a run has: ``devices`` x ``num_nodes`` (``devices=auto``: every GPU, else 1).
    A batch size is per process; distributed SimCLR gathers every process's views as negatives."""
    devices = cfg.devices
    if not isinstance(devices, int):
        devices = torch.cuda.device_count() if resolve_accelerator(cfg) == "gpu" else 1
    return max(1, devices) * max(1, cfg.num_nodes)


def placement(cfg: Config) -> Placement:
    """Accelerator, device, precision and memory format of a run."""
    accelerator = resolve_accelerator(cfg)
    device = torch.device({"gpu": "cuda", "mps": "mps"}.get(accelerator, "cpu"))
    return Placement(accelerator, device, resolve_precision(cfg), use_channels_last(cfg))


def keep_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed memory for reuse instead of returning it to the system.

    A ResNet-50 step on a CPU allocates and frees hundreds of MB of activations; by default glibc serves
    allocations above a size threshold with fresh ``mmap`` pages and unmaps them when freed, so every step
    page-faults all of them in again (measured: ~0.5 million faults and ~20% of the step in the kernel at
    224 px). Raising the mmap and trim thresholds removes that; ``benchmarks/simclr_throughput.py`` measures
    the gain. The cost: the process keeps its peak heap until it exits. Skipped where the C library is not
    glibc, and when ``MAMMO_KEEP_FREED_MEMORY=0``. Returns True when applied.
    """
    import ctypes

    if os.environ.get("MAMMO_KEEP_FREED_MEMORY", "1") == "0" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    m_trim_threshold, m_mmap_threshold, largest = -1, -3, 2**31 - 1
    return bool(libc.mallopt(m_mmap_threshold, largest)) and bool(libc.mallopt(m_trim_threshold, largest))


def cpu_speedups(cfg: Config) -> None:
    """What a training or CAM stage sets up before it runs on the CPU (see :func:`keep_freed_memory`)."""
    if resolve_accelerator(cfg) == "cpu" and keep_freed_memory():
        log.debug("glibc malloc keeps freed memory (MAMMO_KEEP_FREED_MEMORY=0 turns this off)")


def prepare_model(model: torch.nn.Module, where: Placement) -> torch.nn.Module:
    """Move ``model`` to the placement's device and memory format; on a bf16 CPU, switch on the fast path."""
    model = model.to(where.device)
    if where.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if where.bf16_on_cpu:
        from mammo_utils.runs.fast_cpu import use_fast_bf16_blocks

        use_fast_bf16_blocks(model)
    return model


def prepare_input(x: torch.Tensor, where: Placement) -> torch.Tensor:
    """A batch on the placement's device, in its memory format."""
    x = x.to(where.device, non_blocking=True)
    return x.contiguous(memory_format=torch.channels_last) if where.channels_last and x.dim() == 4 else x
