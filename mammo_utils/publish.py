"""Copy a finished run's report and a few figures into a small folder that can be committed and shown in
the README (``docs/results/<profile>-<dataset>/``): no checkpoints, no predictions, figures downscaled."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from PIL import Image

from .config import Config, project_root
from .errors import MammoError
from .methods import METHODS
from .paths import STAGES, atomic_write_text, run_dir
from .report import write_report

log = logging.getLogger(__name__)

# (stage, file) in the order the README shows them; a missing one is skipped (e.g. no density on MIAS).
# Figures that show mammograms are published for the synthetic data only: the real datasets' licences do not
# let us republish their images (see data_manifests/README.md); they stay in the user's run folder.
SHOWS_IMAGES = {"view_pairs.png", *(f"outcome_grid_{m}.png" for m in METHODS)}
FIGURES = (
    ("evaluate", "label_efficiency.png"),
    ("evaluate", "roc.png"),
    ("evaluate", "confusion.png"),
    ("evaluate", "by_density.png"),
    ("pretrain", "pretrain_curves.png"),
    ("pretrain", "view_pairs.png"),
    *(("explain", f"outcome_grid_{m}.png") for m in METHODS),
    ("explain", "localization.png"),
)
MAX_WIDTH_PX = 1400


def publish_run(cfg: Config, dest: Path | None = None) -> Path:
    """Write ``report.md`` (figure links pointing into the folder) and the downscaled figures to ``dest``
    (default ``docs/results/<profile>-<dataset>/``); returns the folder. Figures with mammograms in them
    (view pairs, Grad-CAM grids) are published for the synthetic data only."""
    root = run_dir(cfg)
    metrics = root / STAGES["evaluate"] / "metrics.json"
    if not metrics.exists():
        raise MammoError(f"No finished run in {root} (no {metrics.relative_to(root)}). Run "
                         f"`python -m mammo_utils reproduce --profile {cfg.profile} --dataset {cfg.dataset}` first.")
    dest = Path(dest or project_root() / "docs" / "results" / f"{cfg.profile}-{cfg.dataset}")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    report = write_report(cfg).read_text()
    shown = []
    for stage, name in FIGURES:
        src = root / STAGES[stage] / name
        if not src.exists() or (name in SHOWS_IMAGES and cfg.dataset != "synthetic"):
            continue
        with Image.open(src) as im:
            if im.width > MAX_WIDTH_PX:
                im = im.resize((MAX_WIDTH_PX, round(im.height * MAX_WIDTH_PX / im.width)), Image.LANCZOS)
            im.convert("RGB").save(tmp / name, optimize=True)
        report = report.replace(f"`{STAGES[stage]}/{name}`", f"[`{name}`]({name})")
        shown.append(name)
    report += "\n## Figures\n\n" + "\n\n".join(f"![{n}]({n})" for n in shown) + "\n"
    atomic_write_text(tmp / "report.md", report)
    shutil.rmtree(dest, ignore_errors=True)  # replaced whole, so a stale figure cannot survive
    tmp.rename(dest)
    log.info("published %d figures and report.md to %s", len(shown), dest)
    return dest
