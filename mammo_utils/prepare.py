"""Stage 01: dataset files → manifest (patient-level split) → preprocessed cache → figures."""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from . import plots
from .cache import cache_images, cache_key, load_arrays, load_lesion_masks
from .config import Config
from .datasets import get_dataset
from .manifest import save_manifest, validate
from .paths import atomic_write_text, remove_stale_temporaries, stage_dir
from .stage import is_done, mark_done, stage_key

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "image_size_px", "split", "synthetic", "data_dir", "cache_dir")


def run_prepare(cfg: Config, keep_going: bool = False, workers: int | None = None, force: bool = False) -> Path:
    """Build the manifest, cache the preprocessed images and draw the gallery and class balance.

    Writes ``images.csv``, ``lesions.csv``, ``preprocessed.csv``, ``skipped.csv`` (when images were
    skipped), ``gallery.png`` and ``class_balance.png`` into ``runs/<profile>-<dataset>/01_data_preparation``.
    Images already in the cache are not preprocessed again, even with ``force``.
    """
    out = stage_dir(cfg, "prepare")
    key = stage_key(cfg, "prepare", SECTIONS)
    for folder in (out, Path(cfg.cache_dir) / cfg.dataset / cache_key(cfg.image_size_px)):
        if folder.is_dir() and (removed := remove_stale_temporaries(folder)):  # left by a run killed mid-write
            log.info("removed %d unfinished temporary file(s) from %s", removed, folder)
    if not force and is_done(out, key, ["images.csv", "preprocessed.csv"]):
        index = pd.read_csv(out / "preprocessed.csv", keep_default_na=False)
        if all(Path(p).exists() for p in index["array_path"]):
            log.info("stage 01 is up to date in %s", out)
            return out
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
    mark_done(out, key, cfg)
    return out


def load_index(cfg: Config) -> pd.DataFrame:
    """Stage 01's index of preprocessed images (``preprocessed.csv``: the manifest's columns, the cached array's
    path and its ``Transform``), what every later stage reads; a clear error when stage 01 has not run."""
    from .paths import require

    return pd.read_csv(require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)


def draw_figures(out: Path, images: pd.DataFrame, index: pd.DataFrame, n: int = 12) -> None:
    """The gallery (abnormal images first, lesions outlined) and the class-balance chart."""
    shown = pd.concat([index[index.abnormal == 1].head(n // 2), index[index.abnormal == 0].head(n // 2)])
    shown = shown.head(n)
    titles = [f"{r.image_id}\n{plots.label_name(r.abnormal, r.malignant)}" for r in shown.itertuples()]
    plots.gallery(load_arrays(shown), load_lesion_masks(shown), titles, out / "gallery.png")
    density_name = "BI-RADS density"
    if not images["density"].astype(str).str.len().gt(0).any() and images["dataset"].iloc[0] == "mias":
        # MIAS grades background tissue (Fatty, Glandular, Dense), not BI-RADS A-D; show it under its own name.
        images = images.assign(density=images["source_label"].astype(str).str.split().str[0])
        density_name = "MIAS background tissue (F / G / D)"
    plots.class_balance(images, out / "class_balance.png", density_name)
