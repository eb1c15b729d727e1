"""Where things live: data directory, cache, and ``runs/<profile>-<dataset>/<stage>/``."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import MammoError, MissingStageOutput

if TYPE_CHECKING:
    from .config import Config

STAGES = {
    "prepare": "01_data_preparation",
    "pretrain": "02_contrastive_pretraining",
    "finetune": "03_fine_tuning",
    "evaluate": "04_evaluation",
    "explain": "05_gradcam",
    "protocols": "06_protocols",
}

def run_dir(cfg: Config) -> Path:
    """The run folder ``<runs>/<profile>-<dataset>/`` (``<profile>-<dataset>-<variant>/`` for a named variant)."""
    return Path(cfg.runs_dir) / "-".join(filter(None, (cfg.profile, cfg.dataset, cfg.variant)))


def stage_dir(cfg: Config, stage: str, create: bool = True) -> Path:
    """The folder of one stage inside the run folder (created unless ``create`` is False)."""
    path = run_dir(cfg) / STAGES[stage]
    if create:
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise MammoError(
                f"Cannot create the run folder {path} ({exc.strerror}). Set MAMMO_RUNS_DIR to a writable folder."
            ) from None
    return path


def how_to_run(cfg: Config, stage: str) -> str:
    return (
        f"Run notebook {STAGES[stage]} or `python -m mammo_utils {stage} --dataset {cfg.dataset} "
        f"--profile {cfg.profile}` first."
    )


def require(cfg: Config, stage: str, filename: str) -> Path:
    """Path of an output of an earlier stage; a clear error when it is not there."""
    path = run_dir(cfg) / STAGES[stage] / filename
    if not Path(cfg.runs_dir).is_dir():
        raise MissingStageOutput(
            f"The runs directory {cfg.runs_dir} does not exist (MAMMO_RUNS_DIR). {how_to_run(cfg, stage)}"
        )
    if not path.exists():
        raise MissingStageOutput(f"No {filename} in {path.parent}. {how_to_run(cfg, stage)}")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that a killed process leaves the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def finite_or_none(obj: Any) -> Any:
    """``obj`` with every NaN or infinite float replaced by None (JSON has no NaN: it becomes ``null``)."""
    if isinstance(obj, dict):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and getattr(obj, "ndim", 1) == 0:  # numpy scalars
        return finite_or_none(obj.item())
    return obj


def atomic_write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (undefined numbers as ``null``, never ``NaN``), atomically."""
    text = json.dumps(finite_or_none(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def remove_stale_temporaries(folder: Path) -> int:
    """Delete the temporary files :func:`atomic_write_bytes` leaves when a process is killed mid-write
    (``.<name>.<random>.tmp``) in ``folder``; returns how many. A stage calls it when it starts."""
    removed = 0
    for tmp in Path(folder).glob(".*.tmp"):
        try:
            tmp.unlink()
            removed += 1
        except OSError:
            pass
    return removed
