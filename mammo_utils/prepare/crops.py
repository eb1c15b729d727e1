"""Crops of the breast at the film's own scale: the unit stage 02 pretrains on, and stage 03's crop task.

A whole MIAS film shrunk to 128 px turns the median lesion (radius 41 px of 1,024) into a 5 px smudge. So besides
the small network input of every film (``image_size_px``), stage 01 keeps each film at ``crops.film_size_px``
(512 px for MIAS, about 400 µm a pixel, where that lesion keeps a radius of about 20 px), and cuts crops of
``crops.size_px`` from it:

- **regions for pretraining** (:func:`breast_points`, :func:`cut`): any point of the breast, new ones every
  epoch, no label used;
- **labelled crops** (:func:`labelled_crops`), the crop task "is there a lesion in this crop?": for each located
  finding (``lesions.csv``: circle, box or mask; findings without coordinates are left out), ``per_site`` crops
  centred on it and shifted by up to a quarter side; for each normal film, ``per_normal_film`` crops centred at
  random points of its breast. Stage 02's kNN monitor reads them (labels used only to watch), stage 03 trains and
  tests classifiers on them, always split by woman.

The film at ``film_size_px`` is preprocessed exactly as the network input (breast mask, crop to the breast, chest
wall on the left), at another scale: the same :class:`~mammo_utils.prepare.preprocess.Transform` with the scale
multiplied by ``film_size_px / image_size_px`` (:func:`hires_transform`) maps the radiologists' marks onto it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from mammo_utils.prepare.preprocess import Transform
from mammo_utils.prepare.split import subsample_patients

CROP_COLUMNS = ["crop_id", "image_id", "patient_id", "split", "fold", "label", "kind", "x", "y", "lesion_r"]


@dataclass(frozen=True)
class CropPlan:
    """How labelled crops are cut (lengths in pixels of the film at ``film_size_px``).

    Attributes:
        size_px: side of a crop. per_site: crops per located finding. per_normal_film: crops per normal film.
        jitter: the largest shift of a lesion crop's centre from the finding's centre, as a fraction of the side.
    """

    size_px: int = 64
    per_site: int = 4
    per_normal_film: int = 4
    jitter: float = 0.25


def hires_transform(row: pd.Series | dict, film_size_px: int) -> Transform:
    """The :class:`Transform` of a film's copy at ``film_size_px``: the index row's own (at ``image_size_px``)
    with its scale multiplied by ``film_size_px / out_size``."""
    t = Transform.from_dict(dict(row))
    return replace(t, scale=t.scale * film_size_px / t.out_size, out_size=int(film_size_px))


def lesion_sites(index: pd.DataFrame, lesions: pd.DataFrame, film_size_px: int) -> pd.DataFrame:
    """The located findings of abnormal films in the pixels of the films at ``film_size_px``: ``image_id, x, y, r``.

    A circle gives its centre and radius; a box its centre and half its larger side; a mask (the synthetic set) the
    centre and radius stored beside it. Findings without coordinates are left out.
    """
    rows = []
    films = index.assign(image_id=index.image_id.astype(str)).set_index("image_id")
    for les in lesions.itertuples():
        image_id = str(les.image_id)
        if image_id not in films.index or int(films.at[image_id, "abnormal"]) != 1:
            continue
        if les.shape not in ("circle", "box", "mask"):
            continue
        if les.shape == "box" or not np.isfinite(float(les.cx)):
            if not np.isfinite(float(les.x0)):
                continue
            cx, cy = (float(les.x0) + float(les.x1)) / 2, (float(les.y0) + float(les.y1)) / 2
            r = max(float(les.x1) - float(les.x0), float(les.y1) - float(les.y0)) / 2
        else:
            cx, cy, r = float(les.cx), float(les.cy), float(les.r)
        t = hires_transform(films.loc[image_id], film_size_px)
        (x, y), = t.to_output(np.array([[cx, cy]]))
        rows.append({"image_id": image_id, "x": float(x), "y": float(y), "r": t.length_to_output(r)})
    return pd.DataFrame(rows, columns=["image_id", "x", "y", "r"])


def breast_points(film: np.ndarray, margin_px: int = 0) -> np.ndarray:
    """The (row, column) of every breast pixel of a preprocessed film (zero outside the breast), at least
    ``margin_px`` inside it where the breast is large enough for that; (N, 2) int array."""
    breast = film > 0
    if margin_px > 0:
        inner = ndimage.binary_erosion(breast, iterations=margin_px)
        breast = inner if inner.any() else breast
    points = np.argwhere(breast)
    return points if len(points) else np.argwhere(np.ones_like(film, dtype=bool))


def cut(film: np.ndarray, x: float, y: float, size_px: int) -> np.ndarray:
    """The ``size_px`` square of ``film`` centred on ``(x, y)`` (column, row), moved inside the film where it would
    cross an edge (a film smaller than the square is padded with zeros)."""
    h, w = film.shape
    if h < size_px or w < size_px:
        film = np.pad(film, ((0, max(0, size_px - h)), (0, max(0, size_px - w))))
        h, w = film.shape
    x0 = int(np.clip(round(x - size_px / 2), 0, w - size_px))
    y0 = int(np.clip(round(y - size_px / 2), 0, h - size_px))
    return film[y0 : y0 + size_px, x0 : x0 + size_px]


def labelled_crops(index: pd.DataFrame, lesions: pd.DataFrame, films: dict[str, np.ndarray], film_size_px: int,
                   plan: CropPlan, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """The crop task's crops: lesion crops around every located finding, normal crops from every normal film.

    Args:
        index: stage 01's index (``image_id, patient_id, split, fold, abnormal`` and the transform fields).
        lesions: the manifest's findings (original pixels).
        films: image_id -> the film at ``film_size_px`` (float, zero outside the breast).
        film_size_px: the films' size. plan: sizes and counts. seed: the draws (per film, so adding a film does
            not move the others' crops).

    Returns:
        The table (:data:`CROP_COLUMNS`; ``label`` 1 for a lesion crop, 0 for a normal one; ``x, y`` the crop's
        centre in the film's pixels) and the (N, size_px, size_px) float16 crops in the table's order.
    """
    sites = lesion_sites(index, lesions, film_size_px)
    by_film = {k: g for k, g in sites.groupby("image_id")}
    rows, arrays = [], []
    size, jitter = plan.size_px, plan.jitter * plan.size_px
    for i, film in enumerate(index.sort_values("image_id").itertuples()):
        image_id = str(film.image_id)
        rng = np.random.default_rng([seed, i])
        pixels = films[image_id]
        if int(film.abnormal) == 1:
            centres = [(s.x + dx, s.y + dy, "lesion", s.r) for s in by_film.get(image_id, sites.iloc[:0]).itertuples()
                       for dx, dy in rng.uniform(-jitter, jitter, size=(plan.per_site, 2))]
        else:
            points = breast_points(pixels, margin_px=size // 2)
            pick = rng.choice(len(points), size=min(plan.per_normal_film, len(points)), replace=False)
            centres = [(float(points[k][1]), float(points[k][0]), "normal", 0.0) for k in pick]
        for j, (x, y, kind, r) in enumerate(centres):
            rows.append({"crop_id": f"{image_id}-c{j}", "image_id": image_id, "patient_id": str(film.patient_id),
                         "split": film.split, "fold": film.fold, "label": int(kind == "lesion"), "kind": kind,
                         "x": round(x, 2), "y": round(y, 2), "lesion_r": round(r, 2)})
            arrays.append(cut(pixels, x, y, size).astype(np.float16))
    table = pd.DataFrame(rows, columns=CROP_COLUMNS)
    return table, np.stack(arrays) if arrays else np.zeros((0, size, size), np.float16)


def tile_centres(film: np.ndarray, size_px: int, stride_px: int, min_breast: float = 0.5) -> list[tuple[int, int]]:
    """Centres ``(x, y)`` of crops tiling a film every ``stride_px``, kept where at least ``min_breast`` of the crop
    is breast: how a whole film is read by a crop classifier (its score is the highest of its crops')."""
    h, w = film.shape
    breast = (film > 0).astype(np.float32)
    centres = []
    for y0 in range(0, max(1, h - size_px + 1), stride_px):
        for x0 in range(0, max(1, w - size_px + 1), stride_px):
            if breast[y0 : y0 + size_px, x0 : x0 + size_px].mean() >= min_breast:
                centres.append((x0 + size_px // 2, y0 + size_px // 2))
    return centres


def baseline_features(arrays: np.ndarray, name: str) -> torch.Tensor:
    """Features of (N, S, S) crops without a network: ``pixels`` (the crop shrunk to 16 x 16 by averaging),
    ``mean``, ``sd`` or ``mean_sd`` of its grey levels."""
    x = torch.from_numpy(np.asarray(arrays, dtype=np.float32))
    if name == "pixels":
        return torch.nn.functional.adaptive_avg_pool2d(x[:, None], 16).flatten(1)
    stats = {"mean": x.mean(dim=(1, 2)), "sd": x.std(dim=(1, 2))}
    return torch.stack([stats[k] for k in ("mean", "sd")] if name == "mean_sd" else [stats[name]], dim=1)


def labelled_women(crops: pd.DataFrame, train: np.ndarray, fraction: float, draw: int) -> np.ndarray:
    """The training crops whose woman is labelled at ``fraction`` in draw ``draw`` (all of them at 1.0)."""
    if fraction >= 1:
        return train
    women = crops[train].assign(abnormal=crops.label, malignant=0).groupby("patient_id", as_index=False).max()
    kept = set(subsample_patients(women, fraction, draw).patient_id.astype(str))
    return train & crops.patient_id.astype(str).isin(kept).to_numpy()
