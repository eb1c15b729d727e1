"""Stage 01: dataset files → manifest (patient-level split) → preprocessed cache → figures."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mammo_utils.config import Config
from mammo_utils.plots import label_name
from mammo_utils.prepare import figures
from mammo_utils.prepare.cache import cache_images, cache_key, load_arrays, load_lesion_masks
from mammo_utils.prepare.manifest import save_manifest, validate
from mammo_utils.prepare.sources import get_dataset
from mammo_utils.runs.files import atomic_write_text, remove_stale_temporaries
from mammo_utils.runs.stage import StageRun

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "image_size_px", "split", "synthetic", "data_dir", "cache_dir")


def run_prepare(cfg: Config, keep_going: bool = False, workers: int | None = None, force: bool = False) -> Path:
    """Build the manifest, cache the preprocessed images and draw the gallery and class balance.

    Writes ``images.csv``, ``lesions.csv``, ``preprocessed.csv``, ``skipped.csv`` (when images were
    skipped), ``gallery.png`` and ``class_balance.png`` into ``runs/<profile>-<dataset>/01_prepare``.
    Images already in the cache are not preprocessed again, even with ``force``.
    """
    cache_folder = Path(cfg.cache_dir) / cfg.dataset / cache_key(cfg.image_size_px)
    if cache_folder.is_dir() and (removed := remove_stale_temporaries(cache_folder)):  # a run killed mid-write
        log.info("removed %d unfinished temporary file(s) from %s", removed, cache_folder)
    run = StageRun(cfg, "prepare", SECTIONS, ["images.csv", "preprocessed.csv"], force)
    if run.up_to_date:
        index = pd.read_csv(run.folder / "preprocessed.csv", keep_default_na=False)
        if all(Path(p).exists() for p in index["array_path"]):
            return run.folder
        log.info("some cached images are gone: preparing again")
    out = run.begin()
    module = get_dataset(cfg.dataset)
    root = module.locate(cfg)
    images, lesions = module.build_manifest(root, cfg)
    missing: list[tuple[str, str]] = []
    if keep_going:
        present = images["path"].map(lambda p: (Path(root) / p).exists())
        if present.any():  # with no image at all there is nothing to keep going with
            missing = [(i, f"file missing: {Path(root) / p}") for i, p in
                       zip(images.loc[~present, "image_id"], images.loc[~present, "path"], strict=True)]
            images = images[present]
            lesions = lesions[lesions["image_id"].isin(images["image_id"])] if not lesions.empty else lesions
    validate(images, lesions, root=root, source=f"{cfg.dataset} manifest")
    save_manifest(out, images, lesions)
    index, skipped = cache_images(images, lesions, root, Path(cfg.cache_dir), cfg.image_size_px,
                                  workers=workers, keep_going=keep_going)
    for image_id, reason in missing:
        log.warning("skipped %s: %s", image_id, reason)
    skipped = missing + skipped
    if skipped:
        atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped, columns=["image_id", "reason"]).to_csv(index=False))
    atomic_write_text(out / "preprocessed.csv", index.to_csv(index=False))
    draw_figures(out, images, index)
    return run.finish()


def load_index(cfg: Config) -> pd.DataFrame:
    """Stage 01's index of preprocessed images (``preprocessed.csv``: the manifest's columns, the cached array's
    path and its ``Transform``), what every later stage reads; a clear error when stage 01 has not run."""
    from mammo_utils.runs.paths import require

    return pd.read_csv(require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)


def draw_figures(out: Path, images: pd.DataFrame, index: pd.DataFrame, n: int = 12) -> None:
    """The gallery (abnormal images first, lesions outlined) and the class-balance chart."""
    shown = pd.concat([index[index.abnormal == 1].head(n // 2), index[index.abnormal == 0].head(n // 2)])
    shown = shown.head(n)
    titles = [f"{r.image_id}\n{label_name(r.abnormal, r.malignant)}" for r in shown.itertuples()]
    figures.gallery(load_arrays(shown), load_lesion_masks(shown), titles, out / "gallery.png")
    density_name = "BI-RADS density"
    if not images["density"].astype(str).str.len().gt(0).any() and images["dataset"].iloc[0] == "mias":
        # MIAS grades background tissue (Fatty, Glandular, Dense), not BI-RADS A-D; show it under its own name.
        images = images.assign(density=images["source_label"].astype(str).str.split().str[0])
        density_name = "MIAS background tissue (F / G / D)"
    figures.class_balance(images, out / "class_balance.png", density_name)
