"""What pretraining and fine-tuning share: the Lightning Trainer, its logs, seeding."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd
import pytorch_lightning as pl
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from mammo_utils.config import Config, show_progress
from mammo_utils.runs.devices import placement, use_cached_cuda_check

log = logging.getLogger(__name__)
use_cached_cuda_check()  # after Lightning's import, which asks for the uncached check


def make_trainer(
    cfg: Config,
    out: Path | None = None,
    max_epochs: int = -1,
    max_steps: int = -1,
    limit_batches: float | int = 1.0,
    callbacks: list | None = None,
    checkpoint: ModelCheckpoint | None = None,
    val_check_interval: int | None = None,
    deterministic: bool | str = False,
    distributed: bool = True,
    log_epochs: bool = True,
) -> pl.Trainer:
    """The one Lightning Trainer of the package, on the run's placement (:func:`~mammo_utils.runs.devices.placement`).

    With ``out`` it logs to CSV and TensorBoard under it (pretraining); without, it logs nothing and keeps no
    checkpoint of its own (fine-tuning, which keeps its best weights in memory). On a CPU with bf16 it switches the
    model to the fast bf16 blocks; without a progress bar it logs one line per epoch.

    Args:
        cfg: the run's settings (placement, ``devices``, ``num_nodes``, ``strategy``).
        out: the folder of the logs (None: no logging).
        max_epochs, max_steps: Lightning's limits (-1: none).
        limit_batches: Lightning's ``limit_train_batches`` (an int caps the batches, a float scales them).
        callbacks: extra callbacks. checkpoint: a ``ModelCheckpoint`` to use (None: no checkpointing).
        val_check_interval: validate every this many steps (None: once per epoch).
        deterministic: deterministic algorithms only.
        distributed: use ``cfg.devices`` and ``cfg.strategy`` (several GPUs, several nodes); False trains on one.
        log_epochs: without a progress bar, log one line per epoch (stage 03's many short fits turn it off).
    """
    quiet_lightning()
    where = placement(cfg)
    callbacks = list(callbacks or [])
    if where.bf16_on_cpu:
        callbacks.insert(0, FastBf16Blocks())
    if log_epochs and not show_progress():
        callbacks.append(LogEpochs())
    if checkpoint is not None:
        callbacks.insert(0, checkpoint)
    devices = cfg.devices if distributed else 1
    n_devices = devices if isinstance(devices, int) else None
    many = bool((n_devices and n_devices > 1) or (distributed and cfg.num_nodes > 1))
    return pl.Trainer(
        default_root_dir=out,
        max_epochs=max_epochs,
        max_steps=max_steps,
        limit_train_batches=limit_batches,
        val_check_interval=val_check_interval,
        check_val_every_n_epoch=None if val_check_interval else 1,
        num_sanity_val_steps=0,
        accelerator=where.accelerator,
        devices=devices,
        num_nodes=cfg.num_nodes if distributed else 1,
        strategy=cfg.strategy if distributed else "auto",
        # Synchronised batch norm across GPUs (PyTorch implements it for CUDA only).
        sync_batchnorm=many and where.accelerator == "gpu",
        precision=where.precision,
        # One CSV version per (re)start: a resumed run appends a version instead of overwriting the history.
        logger=[CSVLogger(out, name="logs"), TensorBoardLogger(out, name="tensorboard")] if out else False,
        enable_checkpointing=checkpoint is not None,
        callbacks=callbacks,
        log_every_n_steps=1,
        deterministic=deterministic,
        enable_model_summary=False,
        enable_progress_bar=show_progress(),
    )


def last_checkpoint(out: Path, monitor: str | None = None, mode: str = "max") -> ModelCheckpoint:
    """Checkpoint every epoch into ``out/checkpoints``: ``last.ckpt`` (what ``--resume`` needs), overwritten each
    epoch, and with ``monitor`` also the best epoch's ``epochNNN.ckpt``."""
    return ModelCheckpoint(dirpath=out / "checkpoints", filename="epoch{epoch:03d}", auto_insert_metric_name=False,
                           save_last=True, monitor=monitor, mode=mode, save_top_k=1 if monitor else 0)


class FastBf16Blocks(pl.Callback):
    """Switch the model's ResNet blocks to their faster bf16 CPU implementation when training starts
    (:mod:`mammo_utils.runs.fast_cpu`: same parameters, bit-identical outputs and gradients)."""

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        from mammo_utils.runs.fast_cpu import use_fast_bf16_blocks

        use_fast_bf16_blocks(pl_module)


class LogEpochs(pl.Callback):
    """One log line per epoch (its number, the time it took, the metrics logged) where no progress bar is
    drawn: in the terminal of ``make demo``, and in notebooks run by papermill."""

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        self.start = time.perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        import time

        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.endswith(("_epoch", "knn_acc"))}
        values = ", ".join(f"{k.removesuffix('_epoch')} {v:.3f}" for k, v in sorted(shown.items()))
        # A run bounded by steps alone (max_epochs -1, the budget curve) says how far it is in steps instead.
        of = (f"of {trainer.max_epochs}" if trainer.max_epochs and trainer.max_epochs > 0
              else f"(step {trainer.global_step} of {trainer.max_steps})")
        log.info("epoch %d %s (%.0f s)%s", trainer.current_epoch + 1, of, time.perf_counter() - self.start,
                 f": {values}" if values else "")


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


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


class Progress:
    """Says, for a stage made of many runs, which run is starting and about how long is left.

    The estimate spreads the time spent so far over the work done so far, in the runs' own units (e.g.
    optimisation steps), so it improves as the stage goes; it is logged (``logging``), which the terminal of
    ``make demo`` / ``make reproduce`` shows, one line per run.

    Args:
        name: the stage, e.g. ``stage 03``. costs: one expected cost per run, in any common unit.
    """

    def __init__(self, name: str, costs: list[float]) -> None:
        import time

        self.name, self.costs, self.clock = name, [max(float(c), 1e-9) for c in costs], time.perf_counter
        self.start, self.done = self.clock(), 0.0

    def begin(self, i: int, what: str) -> None:
        """Log the start of run ``i`` (0-based), described by ``what``."""
        self.done = sum(self.costs[:i])
        elapsed = self.clock() - self.start
        left = ""
        if self.done > 0 and i > 0:
            remaining = sum(self.costs[i:])
            left = f", about {_duration(elapsed * remaining / self.done)} left"
        log.info("%s: run %d of %d, %s (%s so far%s)", self.name, i + 1, len(self.costs), what,
                 _duration(elapsed), left)

    def end(self) -> None:
        log.info("%s: %d runs in %s", self.name, len(self.costs), _duration(self.clock() - self.start))


def quiet_lightning() -> None:
    """Keep Lightning's start-up chatter (available accelerators, tips, "max_steps reached") out of the
    output: a stage trains dozens of small models, and their progress is what a person wants to see."""
    import warnings

    for name in ("pytorch_lightning", "lightning.pytorch", "lightning_fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*LeafSpec.*")
    warnings.filterwarnings("ignore", message=".*litlogger.*")
