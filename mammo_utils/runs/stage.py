"""When a stage runs, and what it records: the one place every stage's bookkeeping lives.

A stage is a function ``run_<stage>(cfg, force=False) -> Path`` that opens a :class:`StageRun`::

    run = StageRun(cfg, "evaluate", SECTIONS, outputs=["metrics.json"], force=force)
    if run.up_to_date:
        return run.folder
    out = run.begin()
    ...  # read the earlier stages' files, compute, write into out
    return run.finish()

:class:`StageRun` decides whether the stage is up to date (its ``stage.json`` records the same key and every
output exists), prepares its folder (deleting what a killed run left half-written, setting up the CPU) and,
when the stage finishes, writes ``stage.json`` with the key and the run's provenance, and refreshes the run's
``report.md``. A stage made of many resumable parts (the folds of stage 02, the runs of stage 03) marks each
part done in its own folder with :meth:`StageRun.part_done` / :meth:`StageRun.mark_part_done`.

The key is a hash of the stage's own settings (``sections`` of the configuration) and of the keys of the
stages it reads (:data:`UPSTREAM`), so changing a pretraining setting re-runs stages 03-05 and nothing else.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mammo_utils.runs.files import atomic_write_json, remove_stale_temporaries
from mammo_utils.runs.paths import STAGE_NAMES, stage_dir
from mammo_utils.runs.provenance import provenance

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

# The stages each stage reads: its key includes theirs, so a change upstream re-runs everything downstream.
UPSTREAM = {"prepare": (), "pretrain": ("prepare",), "finetune": ("prepare", "pretrain"),
            "evaluate": ("finetune",), "gradcam": ("finetune", "evaluate"), "protocols": ("prepare", "pretrain")}


def is_done(folder: Path, key: str, outputs: list[str]) -> bool:
    """True when ``folder/stage.json`` records ``key`` and every output file exists."""
    marker = Path(folder) / "stage.json"
    if not marker.exists() or not all((Path(folder) / o).exists() for o in outputs):
        return False
    try:
        return json.loads(marker.read_text()).get("key") == key
    except (OSError, json.JSONDecodeError):
        return False


def stage_key(cfg: Config, stage: str, sections: tuple[str, ...]) -> str:
    """The key a stage's ``stage.json`` records: a hash of its own settings (``sections``) and of the keys of
    the stages it reads (:data:`UPSTREAM`, as their ``stage.json`` files record them)."""
    upstream = {}
    for name in UPSTREAM[stage]:
        marker = stage_dir(cfg, name, create=False) / "stage.json"
        try:
            upstream[name] = json.loads(marker.read_text()).get("key", "")
        except (OSError, json.JSONDecodeError):
            upstream[name] = ""  # not run yet: the stage will say so when it reads the missing output
    blob = json.dumps({"own": cfg.section_hash(*sections), "upstream": upstream}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def mark_done(folder: Path, key: str, cfg: Config, **extra) -> None:
    """Record in ``folder/stage.json`` that it finished with ``key``, with what is needed to reproduce it."""
    atomic_write_json(Path(folder) / "stage.json", {"key": key, **provenance(cfg), **extra})


class StageRun:
    """One execution of stage ``name``: its folder, its key, and whether it has anything to do.

    Args:
        cfg: the run's settings.
        name: the stage (``prepare``, ``pretrain``, ``finetune``, ``evaluate``, ``gradcam``, ``protocols``).
        sections: the configuration sections the stage's results depend on (its part of the key).
        outputs: the files (relative to the stage folder) that must exist for the stage to count as done.
        force: run even when up to date.
    """

    def __init__(self, cfg: Config, name: str, sections: tuple[str, ...], outputs: list[str],
                 force: bool = False) -> None:
        self.cfg, self.name = cfg, name
        self.folder = stage_dir(cfg, name, create=False)
        if self.folder.is_dir() and (removed := remove_stale_temporaries(self.folder)):  # left by a killed run
            log.info("removed %d unfinished temporary file(s) from %s", removed, self.folder)
        self.key = stage_key(cfg, name, sections)
        self.up_to_date = not force and is_done(self.folder, self.key, outputs)
        if self.up_to_date:
            log.info("stage %02d (%s) is up to date in %s; force=True (--force) runs it again",
                     STAGE_NAMES.index(name) + 1, name, self.folder)

    def begin(self) -> Path:
        """Create the stage folder and set up the CPU (:func:`mammo_utils.runs.devices.cpu_speedups`); returns
        the folder. (What a killed run left half-written there was deleted when the run was opened.)"""
        from mammo_utils.runs.devices import cpu_speedups

        out = stage_dir(self.cfg, self.name)
        cpu_speedups(self.cfg)
        return out

    def part_done(self, folder: Path, outputs: list[str]) -> bool:
        """Whether one resumable part of the stage (a fold, a fine-tuning run) already finished with this key."""
        return is_done(folder, self.key, outputs)

    def mark_part_done(self, folder: Path, **extra) -> None:
        """Record that one part of the stage finished (its own ``stage.json``)."""
        mark_done(folder, self.key, self.cfg, **extra)

    def finish(self, **extra) -> Path:
        """Write the stage's ``stage.json`` (key, provenance and ``extra``), refresh ``report.md`` from what the
        stages have written so far, and return the stage folder."""
        from mammo_utils.report import write_report

        mark_done(self.folder, self.key, self.cfg, **extra)
        write_report(self.cfg)
        return self.folder
