"""Where a run's files live: ``runs/<profile>-<dataset>/<NN>_<stage>/``, one folder per stage.

A stage has one name from notebook to module to command line to output folder: notebook
``notebooks/03_finetune.ipynb``, package ``mammo_utils/finetune/``, command ``python -m mammo_utils finetune``,
folder ``runs/demo-mias/03_finetune/``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from mammo_utils.errors import MammoError, MissingStageOutput

if TYPE_CHECKING:
    from mammo_utils.config import Config

STAGE_NAMES = ("prepare", "pretrain", "finetune", "evaluate", "gradcam", "protocols")
# stage -> its folder (and notebook) name, numbered in the order the course runs them
STAGES = {name: f"{i:02d}_{name}" for i, name in enumerate(STAGE_NAMES, 1)}


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
    """The sentence that tells a person how to produce a stage's outputs."""
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
