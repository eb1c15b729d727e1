"""What pretraining and fine-tuning share: precision, memory format, the Lightning Trainer, seeding."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from .config import Config, show_progress

log = logging.getLogger(__name__)


def cpu_has_bf16() -> bool:
    """True when the CPU has native bf16 instructions (AVX-512 BF16 or AMX), so bf16 autocast pays off."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def resolve_accelerator(cfg: Config) -> str:
    if cfg.accelerator != "auto":
        return cfg.accelerator
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_precision(cfg: Config) -> str:
    """``auto``: bf16-mixed on a bf16-capable CPU or GPU, 16-mixed on older GPUs, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if resolve_accelerator(cfg) == "gpu":
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


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
    import platform

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


def use_channels_last(cfg: Config) -> bool:
    """channels_last helps oneDNN (CPU) and tensor-core (GPU) convolutions alike."""
    return resolve_precision(cfg) != "32-true" or resolve_accelerator(cfg) == "gpu"


def build_trainer(
    cfg: Config,
    out: Path,
    max_epochs: int,
    limit_batches: float | int,
    callbacks: list | None = None,
    monitor: str | None = None,
    mode: str = "max",
    deterministic: bool | str = False,
    validate: bool = True,
    save_last: bool = True,
) -> tuple[pl.Trainer, ModelCheckpoint]:
    """A Lightning Trainer that logs to CSV and TensorBoard and checkpoints every epoch.

    Without ``monitor`` only ``checkpoints/last.ckpt`` is kept, overwritten each epoch (what ``--resume`` needs);
    with it, also the best epoch's ``epochNNN.ckpt``. ``save_last=False`` keeps the best one only.
    """
    checkpoint = ModelCheckpoint(
        dirpath=out / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
        save_last=save_last, monitor=monitor, mode=mode, save_top_k=1 if monitor else 0,
    )
    devices = cfg.devices
    strategy = cfg.strategy
    n_devices = devices if isinstance(devices, int) else None
    trainer = pl.Trainer(
        default_root_dir=out,
        max_epochs=max_epochs,
        limit_train_batches=limit_batches,
        limit_val_batches=1.0 if validate else 0,
        num_sanity_val_steps=0,
        accelerator=resolve_accelerator(cfg),
        devices=devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy,
        # Synchronised batch norm across GPUs (PyTorch implements it for CUDA only).
        sync_batchnorm=bool(((n_devices and n_devices > 1) or cfg.num_nodes > 1) and resolve_accelerator(cfg) == "gpu"),
        precision=resolve_precision(cfg),
        # One CSV version per (re)start: a resumed run appends a version instead of overwriting the history.
        logger=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tensorboard")],
        callbacks=[checkpoint, *(callbacks or [])],
        log_every_n_steps=1,
        deterministic=deterministic,
        enable_model_summary=False,
        enable_progress_bar=show_progress(),
    )
    return trainer, checkpoint


def fresh_start(out: Path) -> None:
    """Remove the logs and checkpoints of an earlier run in ``out`` (a new, non-resumed run starts clean)."""
    import shutil

    for name in ("logs", "tensorboard", "checkpoints"):
        shutil.rmtree(out / name, ignore_errors=True)


def read_metrics(out: Path) -> pd.DataFrame:
    """All rows the CSV logger wrote in ``out/logs``, over every (re)start, later versions winning per step."""
    files = sorted((out / "logs").glob("version_*/metrics.csv"), key=lambda p: int(p.parent.name.split("_")[1]))
    frames = [pd.read_csv(f).assign(_version=i) for i, f in enumerate(files) if f.stat().st_size]
    if not frames:
        return pd.DataFrame(columns=["epoch", "step"])
    df = pd.concat(frames, ignore_index=True)
    # A resumed run repeats the epoch it was killed in; keep the rows of the latest start for each epoch.
    latest = df.groupby("epoch")["_version"].transform("max")
    return df[df["_version"] == latest].drop(columns="_version")


def seed_everything(seed: int) -> None:
    pl.seed_everything(seed, workers=True, verbose=False)
