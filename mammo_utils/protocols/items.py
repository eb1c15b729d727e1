"""The items a whole-film arm splits: the films themselves, or K augmented copies of each (A2's "augment, then
split"), each with its pixels on disk so that features, nearest neighbours and the CNN read them like the cache.

An item table has one row per item: ``item_id``, ``image_id`` (the film it comes from), ``patient_id``, ``label``
(the task's 0/1), ``fold`` (the manifest's, by woman) and ``array_path`` (a float16 .npy in [0, 1]); augmented
copies add ``copy`` (0..K-1) and ``strength``. The copies of a film are nested: K = 2 uses copies 0 and 1 of the
K = 8 set, so the arms with more copies only add twins.

Two copy strengths, each a way the literature makes copies before a split:

- ``finetune``: the project's fine-tuning augmentation (:func:`augmented_copy`: a crop of 80-100% of the film with
  its aspect changed by up to a third, a flip half the time, up to 10 degrees of rotation), what an "augment, then
  split" pipeline with on-the-fly style transforms writes to disk. A copy is not a near-duplicate of its twin;
- ``offline``: the offline augmentation of public pre-augmented mammography sets (:func:`offline_copy`: a flip,
  a shift of a few pixels, a little noise). Such sets also turn films by 90 degrees; those copies are left out
  here, since a turned copy is one no pixel model can match to its source, which the ``finetune`` copies already
  represent.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
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
        torch.default_generator.manual_seed(seed)
        x = torch.from_numpy(np.asarray(image, dtype=np.float32))[None]
        return finetune_transform(size_px, augment)(x)[0].numpy()


@dataclass(frozen=True)
class OfflineAugment:
    """The offline augmentation of pre-augmented sets: ``flip_prob`` of a horizontal flip, a shift of up to
    ``shift`` of the side in x and y (the film moved, zeros let in), Gaussian noise of ``noise_sd``."""

    flip_prob: float = 0.5
    shift: float = 0.03
    noise_sd: float = 0.02


def offline_copy(image: np.ndarray, seed: int, offline: OfflineAugment) -> np.ndarray:
    """One offline copy of a film (a flip, a small shift, noise), drawn from ``seed``; grey levels stay in [0, 1]."""
    rng = np.random.default_rng(seed)
    x = np.asarray(image, dtype=np.float32)
    if rng.random() < offline.flip_prob:
        x = x[:, ::-1]
    limit = int(round(offline.shift * x.shape[-1]))
    dx, dy = rng.integers(-limit, limit + 1, size=2)
    shifted = np.zeros_like(x)
    h, w = x.shape
    shifted[max(0, dy) : h + min(0, dy), max(0, dx) : w + min(0, dx)] = x[max(0, -dy) : h + min(0, -dy),
                                                                          max(0, -dx) : w + min(0, -dx)]
    return np.clip(shifted + rng.normal(0.0, offline.noise_sd, x.shape), 0.0, 1.0).astype(np.float32)


def augmented_copies(films: pd.DataFrame, k_copies: int, folder: Path, size_px: int, augment: AugmentConfig,
                     seed: int, strength: str = "finetune", offline: OfflineAugment | None = None) -> pd.DataFrame:
    """``k_copies`` augmented copies of every film, written once into ``folder`` (kept when already there).

    Args:
        films: a :func:`films_table`. k_copies: copies per film (the largest K of the study).
        folder: where the copies' arrays go. size_px: their side. augment: the fine-tuning augmentation.
        seed: copy ``c`` of film ``i`` is drawn from ``[seed, i, c]``, whatever the order of the work.
        strength: ``finetune`` (:func:`augmented_copy`) or ``offline`` (:func:`offline_copy` with ``offline``).

    Returns:
        The copies' item table (``copy`` 0..k_copies-1, ``strength``; ``item_id`` = ``<image_id>~<s><copy>``,
        ``s`` the strength's initial).
    """
    folder = Path(folder)
    rows = []
    for i, film in enumerate(films.itertuples()):
        image = None
        for c in range(k_copies):
            item = f"{film.image_id}~{strength[0]}{c}"
            path = folder / f"{item}.npy"
            if not path.exists():
                if image is None:
                    image = np.load(film.array_path, allow_pickle=False).astype(np.float32)
                draw = int(np.random.default_rng([seed, i, c]).integers(2**31))
                copy = (augmented_copy(image, draw, size_px, augment) if strength == "finetune"
                        else offline_copy(image, draw, offline or OfflineAugment()))
                save_npy(path, copy)
            rows.append({"item_id": item, "image_id": film.image_id, "patient_id": film.patient_id,
                         "label": film.label, "fold": film.fold, "array_path": str(path), "copy": c,
                         "strength": strength})
    return pd.DataFrame(rows)


def with_copies(copies: pd.DataFrame, k: int, strength: str | None = None) -> pd.DataFrame:
    """The first ``k`` copies of each film (the nested set of A2 with K = k), of one ``strength`` if given."""
    keep = copies["copy"] < k
    if strength is not None:
        keep &= copies["strength"] == strength
    return copies[keep].reset_index(drop=True)


def load_pixels(items: pd.DataFrame) -> torch.Tensor:
    """The items' arrays as one (N, 1, S, S) float32 tensor in [0, 1]."""
    if not len(items):
        return torch.zeros(0, 1, 1, 1)
    return torch.from_numpy(np.stack([np.load(p, allow_pickle=False) for p in items.array_path]).astype(np.float32))[
        :, None]
