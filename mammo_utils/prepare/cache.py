"""Preprocessed images, stored once per settings hash; atomic, resumable, parallel and verifiable.

Layout: ``<cache dir>/<dataset>/<key>/<image_id>.npy`` (float16 image), ``<image_id>.lesion.npy`` (uint8
union of the image's lesions on the same grid, when it has located lesions) and ``<image_id>.json`` (the
:class:`~mammo_utils.prepare.preprocess.Transform`, written last: an image is cached when its JSON exists).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mammo_utils.config import show_progress
from mammo_utils.errors import DataError, MammoError
from mammo_utils.prepare.preprocess import PREPROCESS_VERSION, Transform, lesion_mask, preprocess_image
from mammo_utils.runs.files import atomic_write_bytes, atomic_write_json

log = logging.getLogger(__name__)

def cache_key(size_px: int) -> str:
    """Hash of every setting that changes the cached pixels."""
    blob = json.dumps({"size_px": int(size_px), "version": PREPROCESS_VERSION}, sort_keys=True)
    return f"s{size_px}-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def npy_bytes(array: np.ndarray) -> bytes:
    """An array as the bytes of a ``.npy`` file (for an atomic write)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _one_thread() -> None:
    # One thread per worker process: several processes each spinning several OpenMP threads on the same
    # cores slow each other down many times over.
    import torch

    torch.set_num_threads(1)


def _process_one(job: tuple[str, str, list[dict], str, str, int]) -> tuple[str, str | None]:
    """Preprocess one image; returns ``(image_id, error or None)``. Runs in a worker process."""
    from mammo_utils.prepare.io import read_image

    image_id, path, lesions, root, out_dir, size_px = job
    out = Path(out_dir)
    if (out / f"{image_id}.json").exists():
        return image_id, None
    try:
        pixels = read_image(Path(root) / path).pixels
        image, transform = preprocess_image(pixels, size_px)
        atomic_write_bytes(out / f"{image_id}.npy", npy_bytes(image.astype(np.float16)))
        if lesions:
            h, w = pixels.shape
            mask = lesion_mask(lesions, w, h, mask_reader=lambda p: read_image(Path(root) / p).pixels)
            if mask.any():
                small = transform.apply(mask.astype(np.float32)) > 0.25
                atomic_write_bytes(out / f"{image_id}.lesion.npy", npy_bytes(small.astype(np.uint8)))
        atomic_write_json(out / f"{image_id}.json", transform.to_dict())
        return image_id, None
    except MammoError as exc:
        return image_id, str(exc)
    except Exception as exc:  # a bad file must not stop the others; it is reported with its reason
        return image_id, f"{Path(root) / path}: {type(exc).__name__}: {exc}"


def cache_images(
    images: pd.DataFrame,
    lesions: pd.DataFrame,
    root: Path,
    cache_dir: Path,
    size_px: int,
    workers: int | None = None,
    keep_going: bool = False,
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Preprocess every image of a manifest into the cache (skipping those already there).

    Args:
        images, lesions: the manifest tables.
        root: the dataset's root folder (``path`` is relative to it).
        cache_dir: the cache root.
        size_px: output side.
        workers: processes (default: all cores); 1 runs in this process.
        keep_going: skip unreadable images (listed in the return value) instead of stopping.

    Returns:
        The index (one row per cached image: ``image_id``, ``array_path``, ``lesion_path`` and the transform
        fields) and the list of ``(image_id, reason)`` skipped.
    """
    dataset = str(images["dataset"].iloc[0])
    out_dir = Path(cache_dir) / dataset / cache_key(size_px)
    out_dir.mkdir(parents=True, exist_ok=True)
    located = lesions[lesions["shape"].isin(["circle", "box", "mask"])] if not lesions.empty else lesions
    by_image = {k: g.to_dict("records") for k, g in located.groupby("image_id")} if not located.empty else {}
    jobs = [(r.image_id, r.path, by_image.get(r.image_id, []), str(root), str(out_dir), int(size_px))
            for r in images.itertuples()]
    workers = workers or os.cpu_count() or 1
    errors: list[tuple[str, str]] = []
    progress = tqdm(total=len(jobs), desc=f"preprocess {dataset} @{size_px}px", unit="img",
                    disable=not show_progress())
    if workers > 1 and len(jobs) > 8:
        with ProcessPoolExecutor(max_workers=workers, initializer=_one_thread) as pool:
            for image_id, err in pool.map(_process_one, jobs, chunksize=4):
                progress.update()
                if err:
                    errors.append((image_id, err))
    else:
        for job in jobs:
            image_id, err = _process_one(job)
            progress.update()
            if err:
                errors.append((image_id, err))
    progress.close()
    for image_id, err in errors:
        log.warning("skipped %s: %s", image_id, err)
    if errors and not keep_going:
        listing = "; ".join(f"{i}: {e}" for i, e in errors[:3])
        raise DataError(
            f"{len(errors)} image(s) could not be preprocessed ({listing}). Fix or remove them, or pass "
            "--keep-going to skip them (every skipped file is listed). Images already cached are kept."
        )
    return index_cache(images, out_dir, skip={i for i, _ in errors}), errors


def index_cache(images: pd.DataFrame, out_dir: Path, skip: set[str] | None = None) -> pd.DataFrame:
    """The index table of cached images (reads each image's transform JSON)."""
    rows = []
    for r in images.itertuples():
        if skip and r.image_id in skip:
            continue
        meta_path = out_dir / f"{r.image_id}.json"
        if not meta_path.exists():
            raise DataError(f"{meta_path} is missing: the cache is incomplete. Run `prepare` again.")
        t = Transform.from_dict(json.loads(meta_path.read_text()))
        lesion_path = out_dir / f"{r.image_id}.lesion.npy"
        rows.append(dict(
            image_id=r.image_id, patient_id=r.patient_id, split=r.split, fold=r.fold, abnormal=r.abnormal,
            malignant=r.malignant, density=r.density, view=r.view, laterality=r.laterality,
            array_path=str((out_dir / f"{r.image_id}.npy").resolve()),
            lesion_path=str(lesion_path.resolve()) if lesion_path.exists() else "",
            **t.to_dict(),
        ))
    return pd.DataFrame(rows)


def verify_cache(index: pd.DataFrame) -> list[tuple[str, str]]:
    """Re-read every cached array; returns ``(image_id, problem)`` for each that is missing or damaged."""
    problems = []
    for r in index.itertuples():
        try:
            arr = np.load(r.array_path, allow_pickle=False)
            if arr.shape != (r.out_size, r.out_size) or not np.isfinite(arr).all():
                problems.append((r.image_id, f"shape {arr.shape} or non-finite values"))
        except Exception as exc:
            problems.append((r.image_id, f"{type(exc).__name__}: {exc}"))
    return problems


def load_arrays(index: pd.DataFrame) -> np.ndarray:
    """All cached images of an index as one (N, S, S) float16 array, in index order."""
    return np.stack([np.load(p, allow_pickle=False) for p in index["array_path"]])


def load_lesion_masks(index: pd.DataFrame) -> list[np.ndarray | None]:
    return [np.load(p, allow_pickle=False).astype(bool) if p else None for p in index["lesion_path"]]
