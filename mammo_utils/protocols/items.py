"""The items a whole-film arm splits: the films themselves, or K augmented copies of each (A2's "augment, then
split"), each with its pixels on disk so that features and the fine-tuned CNN read them like the cache.

An item table has one row per item: ``item_id``, ``image_id`` (the film it comes from), ``patient_id``, ``label``
(the task's 0/1), ``fold`` (the manifest's, by woman) and ``array_path`` (a float16 .npy in [0, 1]); augmented
copies add ``copy`` (0..K-1). The copies of a film are nested: K = 2 uses copies 0 and 1 of the K = 8 set, so
the arms with more copies only add twins.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo_utils.config import AugmentConfig
from mammo_utils.finetune.augment import finetune_transform
from mammo_utils.runs.files import atomic_write_bytes

ITEM_COLUMNS = ["item_id", "image_id", "patient_id", "label", "fold", "array_path"]


def films_table(index: pd.DataFrame, task: str) -> pd.DataFrame:
    """One item per film of the preprocessed index, labelled with ``task`` (``abnormal`` or ``malignant``)."""
    return pd.DataFrame({
        "item_id": index.image_id.astype(str).to_numpy(), "image_id": index.image_id.astype(str).to_numpy(),
        "patient_id": index.patient_id.astype(str).to_numpy(), "label": index[task].astype(int).to_numpy(),
        "fold": pd.to_numeric(index.fold, errors="coerce").fillna(-1).astype(int).to_numpy(),
        "array_path": index.array_path.astype(str).to_numpy(),
    })


def save_npy(path: Path, array: np.ndarray) -> None:
    """Write one float16 array atomically (a killed run leaves no half file)."""
    buf = io.BytesIO()
    np.save(buf, np.asarray(array, dtype=np.float16), allow_pickle=False)
    atomic_write_bytes(Path(path), buf.getvalue())


def augmented_copy(image: np.ndarray, seed: int, size_px: int, augment: AugmentConfig) -> np.ndarray:
    """One augmented copy of a film: the project's fine-tuning augmentation (a mild random crop, a flip, a
    rotation of a few degrees), drawn from ``seed``, as an offline "data augmentation" step would make it."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None]
        return finetune_transform(size_px, augment)(x)[0].numpy()


def augmented_copies(films: pd.DataFrame, k_copies: int, folder: Path, size_px: int, augment: AugmentConfig,
                     seed: int) -> pd.DataFrame:
    """``k_copies`` augmented copies of every film, written once into ``folder`` (kept when already there).

    Args:
        films: a :func:`films_table`. k_copies: copies per film (the largest K of the study).
        folder: where the copies' arrays go. size_px: their side. augment: the augmentation settings.
        seed: copy ``c`` of film ``i`` is drawn from ``[seed, i, c]``, whatever the order of the work.

    Returns:
        The copies' item table (``copy`` 0..k_copies-1; ``item_id`` = ``<image_id>~<copy>``).
    """
    folder = Path(folder)
    rows = []
    for i, film in enumerate(films.itertuples()):
        image = None
        for c in range(k_copies):
            path = folder / f"{film.image_id}~{c}.npy"
            if not path.exists():
                if image is None:
                    image = np.load(film.array_path, allow_pickle=False).astype(np.float32)
                draw = int(np.random.default_rng([seed, i, c]).integers(2**31))
                save_npy(path, augmented_copy(image, draw, size_px, augment))
            rows.append({"item_id": f"{film.image_id}~{c}", "image_id": film.image_id, "patient_id": film.patient_id,
                         "label": film.label, "fold": film.fold, "array_path": str(path), "copy": c})
    return pd.DataFrame(rows)


def with_copies(copies: pd.DataFrame, k: int) -> pd.DataFrame:
    """The first ``k`` copies of each film (the nested set of A2 with K = k)."""
    return copies[copies["copy"] < k].reset_index(drop=True)


def load_pixels(items: pd.DataFrame) -> torch.Tensor:
    """The items' arrays as one (N, 1, S, S) float32 tensor in [0, 1]."""
    if not len(items):
        return torch.zeros(0, 1, 1, 1)
    return torch.from_numpy(np.stack([np.load(p, allow_pickle=False) for p in items.array_path]).astype(np.float32))[
        :, None]
