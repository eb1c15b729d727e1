"""Copy a finished run's report and a few figures into a small folder that can be committed and shown in
the README (``docs/results/<profile>-<dataset>/``): no checkpoints, no predictions, figures downscaled."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from PIL import Image

from mammo_utils.config import Config, project_root
from mammo_utils.errors import MammoError
from mammo_utils.pretrain.methods import METHODS
from mammo_utils.runs.files import atomic_write_bytes, atomic_write_text
from mammo_utils.runs.paths import STAGES, run_dir

log = logging.getLogger(__name__)

# (stage, file) in the order the README shows them; a missing one is skipped (e.g. no density on MIAS).
# Figures that show mammograms are published for the synthetic data only: the real datasets' licences do not
# let us republish their images (see data_manifests/README.md); they stay in the user's run folder.
SHOWS_IMAGES = {"view_pairs.png", *(f"outcome_grid_{m}.png" for m in METHODS)}
FIGURES = (
    ("budget", "budget.png"),
    ("evaluate", "label_efficiency.png"),
    ("evaluate", "roc.png"),
    ("evaluate", "confusion.png"),
    ("evaluate", "by_density.png"),
    ("pretrain", "pretrain_curves.png"),
    ("pretrain", "view_pairs.png"),
    *(("gradcam", f"outcome_grid_{m}.png") for m in METHODS),
    ("gradcam", "localization.png"),
    ("protocols", "protocols.png"),
    ("protocols", "fingerprint.png"),
)
MAX_WIDTH_PX = 1400
# The numbers behind the README's tables, machine-readable, beside the figures (configurations made portable).
DATA_FILES = (("pretrain", "pretraining.json"), ("budget", "budget.json"), ("budget", "budget.csv"),
              ("evaluate", "ssl_gain.json"), ("evaluate", "ssl_gain.csv"), ("evaluate", "metrics.json"),
              ("protocols", "protocols.json"), ("protocols", "protocols.csv"), ("protocols", "predictions.csv.gz"),
              ("recipe", "recipe_search.csv"), ("recipe", "recipe.json"))


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
    report = (root / "report.md").read_text()  # written by every stage as it finishes
    shown = []
    for stage, name in FIGURES:
        src = root / STAGES.get(stage, stage) / name
        if not src.exists() or (name in SHOWS_IMAGES and cfg.dataset != "synthetic"):
            continue
        with Image.open(src) as im:
            if im.width > MAX_WIDTH_PX:
                im = im.resize((MAX_WIDTH_PX, round(im.height * MAX_WIDTH_PX / im.width)), Image.LANCZOS)
            im.convert("RGB").save(tmp / name, optimize=True)
        report = report.replace(f"`{STAGES.get(stage, stage)}/{name}`", f"[`{name}`]({name})")
        shown.append(name)
    for stage, name in DATA_FILES:
        src = root / STAGES.get(stage, stage) / name
        if src.exists() and name.endswith(".gz"):
            atomic_write_bytes(tmp / name, src.read_bytes())
        elif src.exists():
            atomic_write_text(tmp / name, portable_json(src.read_text()) if name.endswith(".json") else src.read_text())
            report = report.replace(f"`{STAGES.get(stage, stage)}/{name}`", f"[`{name}`]({name})")
    study = root / STAGES["protocols"] / "protocols.md"
    if study.exists():  # the protocol study (stage 06), where it ran: its table as a page of its own
        text = study.read_text().replace("`protocols.png`", "[`protocols.png`](protocols.png)")
        text = text.replace("`fingerprint.png`", "[`fingerprint.png`](fingerprint.png)")
        atomic_write_text(tmp / "protocols.md", text)
        report += "\n## Protocol study\n\nWhat each split protocol does to the number: [`protocols.md`](protocols.md).\n"
    report += "\n## Figures\n\n" + "\n\n".join(f"![{n}]({n})" for n in shown) + "\n"
    atomic_write_text(tmp / "report.md", report)
    shutil.rmtree(dest, ignore_errors=True)  # replaced whole, so a stale figure cannot survive
    tmp.rename(dest)
    log.info("published %d figures and report.md to %s", len(shown), dest)
    from mammo_utils.course.readme import update_readme

    if dest.parent == project_root() / "docs" / "results" and update_readme(project_root() / "README.md", dest.parent):
        log.info("README.md's generated tables rewritten from %s", dest.parent)
    return dest


COURSE_IMAGE_WIDTH_PX = 900  # figures in the course copies: enough to read on GitHub, small enough to commit
COURSE_JPEG_ABOVE_BYTES = 300_000  # a larger PNG (mammogram overlays) is stored as JPEG
DROPPED_OUTPUTS = ("application/vnd.jupyter.widget-view+json",)  # progress widgets do not render off a kernel


def portable_json(text: str) -> str:
    """A results JSON with the configuration's folders made relative to the project (no one's machine in it)."""
    import json

    from mammo_utils.report import portable_paths
    from mammo_utils.runs.files import finite_or_none

    data = json.loads(text)
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data["config"] = portable_paths(data["config"])
    return json.dumps(finite_or_none(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _shrink_png(data: str) -> tuple[str, str]:
    """A base64 PNG made at most COURSE_IMAGE_WIDTH_PX wide; a photograph-like one that stays over
    COURSE_JPEG_ABOVE_BYTES as PNG is re-encoded as JPEG. Returns (mime type, base64 data)."""
    import base64
    import io

    raw = base64.b64decode(data)
    with Image.open(io.BytesIO(raw)) as im:
        if im.width <= COURSE_IMAGE_WIDTH_PX and len(raw) <= COURSE_JPEG_ABOVE_BYTES:
            return "image/png", data
        if im.width > COURSE_IMAGE_WIDTH_PX:
            im = im.resize((COURSE_IMAGE_WIDTH_PX, round(im.height * COURSE_IMAGE_WIDTH_PX / im.width)),
                           Image.LANCZOS)
        im = im.convert("RGB")
        buf = io.BytesIO()
        im.save(buf, format="PNG", optimize=True)
        mime = "image/png"
        if buf.tell() > COURSE_JPEG_ABOVE_BYTES:
            buf = io.BytesIO()
            im.save(buf, format="JPEG", quality=85, optimize=True)
            mime = "image/jpeg"
    return mime, base64.b64encode(buf.getvalue()).decode()


def _scrub(text: str, roots: list[str]) -> str:
    """Paths of this machine written as the project-relative ones a reader would see in their checkout."""
    for root in roots:
        text = text.replace(root + "/", "").replace(root, ".")
    return text


def course_copy(nb: dict, roots: list[str]) -> dict:
    """One executed notebook made fit to publish: outputs kept, figures downscaled, widget outputs dropped,
    this machine's paths made relative, execution metadata (timestamps) removed."""
    for cell in nb["cells"]:
        cell.get("metadata", {}).pop("execution", None)
        cell.get("metadata", {}).pop("papermill", None)
        if cell["cell_type"] != "code":
            continue
        kept = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            for mime in DROPPED_OUTPUTS:
                data.pop(mime, None)
            if "data" in out and not data:
                continue
            if "image/png" in data:
                mime, image = _shrink_png(data.pop("image/png"))
                data[mime] = image
            for mime, value in list(data.items()):
                if mime.startswith("text/"):
                    data[mime] = _scrub("".join(value) if isinstance(value, list) else value, roots)
            if "text" in out:
                out["text"] = _scrub("".join(out["text"]) if isinstance(out["text"], list) else out["text"], roots)
            if "traceback" in out:
                out["traceback"] = [_scrub(line, roots) for line in out["traceback"]]
            kept.append(out)
        cell["outputs"] = kept
    nb.get("metadata", {}).pop("papermill", None)
    return nb


def publish_course(cfg: Config, dest: Path | None = None) -> Path:
    """Copy the executed notebooks of a finished ``reproduce`` (``runs/<profile>-<dataset>/notebooks/``) into
    ``dest`` (default ``docs/course/``) as :func:`course_copy` makes them, with a README listing them."""
    import json

    src = run_dir(cfg) / "notebooks"
    executed = sorted(src.glob("[0-9][0-9]_*.ipynb"))
    if not executed:
        raise MammoError(f"No executed notebooks in {src}. Run `python -m mammo_utils reproduce --profile "
                         f"{cfg.profile} --dataset {cfg.dataset}` (make demo) first.")
    dest = Path(dest or project_root() / "docs" / "course")
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    roots = sorted({str(project_root()), str(run_dir(cfg).parent.parent), str(Path.home())}, key=len, reverse=True)
    lines = [f"# The course, executed ({cfg.profile} profile, {cfg.dataset} data)", "",
             "Read-only copies of `notebooks/` run top to bottom by `make course`, outputs kept and figures "
             "downscaled, so every figure can be seen without running anything. The exercises are as committed "
             "(each check says NOT YET). To run them yourself: `make lab` (README, *Follow the course*).", ""]
    for path in executed:
        nb = course_copy(json.loads(path.read_text()), roots)
        atomic_write_text(tmp / path.name, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
        lines.append(f"- [{path.stem}]({path.name})")
    study = run_dir(cfg) / STAGES["protocols"] / "protocols.json"
    if any(p.stem == STAGES["protocols"] for p in executed) and study.exists():
        skipped = sorted({s["features"] for s in json.loads(study.read_text()).get("skipped", [])})
        lines += ["", f"`{STAGES['protocols']}` ran on the same {cfg.dataset} data"
                  + (f" without the {', '.join(skipped)} rows (stage 02 pretrained no backbone per fold here)"
                     if skipped else "")
                  + "; the study on real MIAS is published as tables and figures only, since its films cannot be "
                  "republished: [`docs/results/demo-mias/protocols.md`](../results/demo-mias/protocols.md)."]
    atomic_write_text(tmp / "README.md", "\n".join(lines) + "\n")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)
    size = sum(p.stat().st_size for p in dest.iterdir()) / 2**20
    log.info("published %d executed notebooks (%.1f MB) to %s", len(executed), size, dest)
    return dest
