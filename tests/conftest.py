"""Shared fixtures: tiny configurations in temporary folders, and the shared real datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mammo_utils.config import load_config

REPO = Path(__file__).resolve().parent.parent


def sources_dir() -> Path | None:
    """The real datasets folder (MAMMO_SOURCES_DIR, else ../shared/datasets beside the checkout)."""
    for candidate in (os.environ.get("MAMMO_SOURCES_DIR"), REPO.parent / "shared" / "datasets"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


@pytest.fixture
def tiny_cfg(tmp_path, monkeypatch):
    """A smoke configuration made tinier still, with data and runs in tmp_path."""
    for var in ("MAMMO_PROFILE", "MAMMO_DATASET", "MAMMO_OVERRIDES", "MAMMO_TASK", "MAMMO_PRECISION"):
        monkeypatch.delenv(var, raising=False)
    return load_config(
        "smoke", "synthetic", data_dir=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"),
        overrides=["synthetic.n_patients=12", "synthetic.size_px=96", "image_size_px=32",
                   "pretrain.batch_size=8", "finetune.batch_size=8", "evaluate.bootstrap_resamples=50"],
        precision="32-true",
    )


@pytest.fixture(autouse=True)
def first_try_at_every_exercise():
    """The course's checks count wrong answers per kernel (the second one adds the steps to the hint): every
    test starts as a learner's first try."""
    from mammo_utils.course import FAILURES

    FAILURES.clear()
