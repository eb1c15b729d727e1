"""Run the notebooks in order with papermill into ``runs/<profile>-<dataset>/notebooks/``."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from mammo_utils.config import Config, project_root
from mammo_utils.course.notebook import ensure_kernel
from mammo_utils.errors import MammoError
from mammo_utils.runs.files import atomic_write_text
from mammo_utils.runs.paths import STAGES, run_dir

log = logging.getLogger(__name__)

NOTEBOOKS = [f"{name}.ipynb" for name in STAGES.values()]


def _stamp(stage: Path) -> int | None:
    """When a stage last finished (its ``stage.json``'s modification time), or None if it never did."""
    marker = stage / "stage.json"
    return marker.stat().st_mtime_ns if marker.exists() else None


def run_reproduce(cfg: Config, notebooks_dir: Path | None = None) -> Path:
    """Execute every notebook (parameters: profile, dataset, task, seed), write HTML copies and print the table.

    Stages whose inputs and settings have not changed are skipped inside each notebook (each stage function
    checks its ``stage.json``), so an interrupted reproduction continues where it stopped.
    """
    import papermill as pm
    from nbconvert import HTMLExporter

    src = Path(notebooks_dir or project_root() / "notebooks")
    missing = [n for n in NOTEBOOKS if not (src / n).exists()]
    if missing:
        raise MammoError(f"Notebooks {missing} not found in {src}; run from a checkout of the repository.")
    out = run_dir(cfg) / "notebooks"
    out.mkdir(parents=True, exist_ok=True)
    params = {"profile": cfg.profile, "dataset": cfg.dataset, "task": cfg.task, "seed": cfg.seed}
    kernel = ensure_kernel()
    # In the terminal, progress bars of a kernel would be re-printed line after line: the stages log one line per
    # run and per epoch instead, and papermill passes the kernel's output through (log_output).
    os.environ.setdefault("MAMMO_PROGRESS", "0")
    from mammo_utils.runs.devices import placement

    log.info("%s on %s at %s: pretrain %s epochs, fine-tune %s epochs", cfg.dataset, placement(cfg).describe(),
             cfg.profile, cfg.pretrain.epochs, cfg.finetune.epochs)
    timings, reused = {}, []
    for i, name in enumerate(NOTEBOOKS, 1):
        if name == f"{STAGES['protocols']}.ipynb" and not cfg.protocols.enabled:
            # The protocol study runs when protocols.enabled (smoke on MIAS / INbreast; `make protocols` alone).
            log.info("[%d/%d] %s skipped: the protocol study is off for %s (--set protocols.enabled=true runs it)",
                     i, len(NOTEBOOKS), name, cfg.dataset)
            continue
        log.info("[%d/%d] %s", i, len(NOTEBOOKS), name)
        stamp = _stamp(run_dir(cfg) / name.removesuffix(".ipynb"))
        start = time.perf_counter()
        try:
            pm.execute_notebook(src / name, out / name, parameters=params, cwd=str(src), progress_bar=False,
                                kernel_name=kernel, log_output=True)
        except pm.PapermillExecutionError as exc:
            raise MammoError(f"Notebook {name} failed in cell {exc.exec_count}: {exc.ename}: {exc.evalue} "
                             f"(executed copy: {out / name}).") from None
        timings[name] = round(time.perf_counter() - start, 1)
        if stamp is not None and stamp == _stamp(run_dir(cfg) / name.removesuffix(".ipynb")):
            reused.append(name)  # the stage was up to date: the notebook's time is its walk-through only
        html, _ = HTMLExporter().from_filename(str(out / name))
        atomic_write_text(out / name.replace(".ipynb", ".html"), html)
    atomic_write_text(out / "timings.json", json.dumps(timings, indent=2))
    atomic_write_text(out / "reused.json", json.dumps(reused))
    from mammo_utils.report import write_report

    report = write_report(cfg)  # again, now with the wall times
    print(report.read_text())
    return run_dir(cfg)
