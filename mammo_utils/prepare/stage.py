"""Stage 01: dataset files → manifest (patient-level split) → preprocessed cache → labelled crops → figures."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.config import Config
from mammo_utils.plots import label_name
from mammo_utils.prepare import figures
from mammo_utils.prepare.cache import cache_images, cache_key, load_arrays, load_lesion_masks, npy_bytes
from mammo_utils.prepare.crops import CropPlan, labelled_crops
from mammo_utils.prepare.manifest import save_manifest, validate
from mammo_utils.prepare.sources import get_dataset
from mammo_utils.runs.files import atomic_write_bytes, atomic_write_text, remove_stale_temporaries
from mammo_utils.runs.stage import StageRun

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "image_size_px", "split", "synthetic", "crops", "data_dir", "cache_dir")


def run_prepare(cfg: Config, keep_going: bool = False, workers: int | None = None, force: bool = False) -> Path:
    """Build the manifest, cache the preprocessed images and draw the gallery and class balance.

    Writes ``images.csv``, ``lesions.csv``, ``preprocessed.csv`` (every film's network input, ``array_path``, and
    its copy at ``crops.film_size_px``, ``hires_path``), the labelled crops (``crops.csv`` and ``crops.npy``,
    :mod:`mammo_utils.prepare.crops`), ``skipped.csv`` (when images were skipped), ``gallery.png``,
    ``crops.png`` and ``class_balance.png`` into ``runs/<profile>-<dataset>/01_prepare``. Images already in the
    cache are not preprocessed again, even with ``force``.
    """
    cache_folder = Path(cfg.cache_dir) / cfg.dataset / cache_key(cfg.image_size_px)
    if cache_folder.is_dir() and (removed := remove_stale_temporaries(cache_folder)):  # a run killed mid-write
        log.info("removed %d unfinished temporary file(s) from %s", removed, cache_folder)
    run = StageRun(cfg, "prepare", SECTIONS, ["images.csv", "preprocessed.csv", "crops.csv", "crops.npy"], force)
    if run.up_to_date:
        index = pd.read_csv(run.folder / "preprocessed.csv", keep_default_na=False)
        if all(Path(p).exists() for p in (*index["array_path"], *index["hires_path"])):
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
    hires, _ = cache_images(images[images.image_id.isin(index.image_id)], lesions, root, Path(cfg.cache_dir),
                            cfg.crops.film_size_px, workers=workers, keep_going=keep_going)
    index = index.merge(hires[["image_id", "array_path"]].rename(columns={"array_path": "hires_path"}), on="image_id")
    crops, arrays = labelled_crops(index, lesions, load_hires(index), cfg.crops.film_size_px, crop_plan(cfg),
                                   cfg.seed)
    atomic_write_text(out / "crops.csv", crops.to_csv(index=False))
    atomic_write_bytes(out / "crops.npy", npy_bytes(arrays))
    for image_id, reason in missing:
        log.warning("skipped %s: %s", image_id, reason)
    skipped = missing + skipped
    if skipped:
        atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped, columns=["image_id", "reason"]).to_csv(index=False))
    atomic_write_text(out / "preprocessed.csv", index.to_csv(index=False))
    draw_figures(out, images, index)
    if len(crops):
        figures.crop_gallery(arrays, crops, out / "crops.png")
    log.info("%d labelled crops of %d px (%d around findings) from films at %d px", len(crops), cfg.crops.size_px,
             int(crops.label.sum()), cfg.crops.film_size_px)
    return run.finish()


def crop_plan(cfg: Config) -> CropPlan:
    """The labelled crops' plan from the ``crops`` settings."""
    c = cfg.crops
    return CropPlan(size_px=c.size_px, per_site=c.per_site, per_normal_film=c.per_normal_film)


def load_hires(index: pd.DataFrame) -> dict[str, np.ndarray]:
    """The films of ``index`` at ``crops.film_size_px`` (float16, zero outside the breast), by image_id."""
    return {str(i): np.load(p, allow_pickle=False) for i, p in zip(index.image_id, index.hires_path, strict=True)}


def load_crops(cfg: Config) -> tuple[pd.DataFrame, np.ndarray]:
    """Stage 01's labelled crops: the table (``crops.csv``) and the (N, S, S) float16 arrays (``crops.npy``)."""
    from mammo_utils.runs.paths import require

    table = pd.read_csv(require(cfg, "prepare", "crops.csv"), dtype={"image_id": str, "patient_id": str},
                        keep_default_na=False)
    return table, np.load(require(cfg, "prepare", "crops.npy"), allow_pickle=False)


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
