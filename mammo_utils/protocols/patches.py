"""A3's items: square patches at the films' native resolution, lesion-centred vs normal tissue, with controls.

A whole MIAS film shrunk to 128 px turns the median lesion (radius 41 px) into a 6 px smudge; a patch cut from
the 1,024 px film at its own resolution keeps every pixel the radiologist saw. The task becomes "is there a
lesion in this patch?", with the location given: **an easier task than screening whole films**.

Sites and patches:

- a *lesion site* is a located finding of an abnormal film (``lesions.csv``: circle, box or mask; findings
  without coordinates are left out); a *normal site* is a bright spot of a normal film's breast (a local maximum
  of the smoothed film), ``normal_sites_per_film`` per film;
- each site gives ``patches_per_site`` overlapping patches, centred on the site and shifted by up to
  ``jitter_px`` in x and y, the same way for both classes.

The controls keep "something is centred here" from being the signal: lesion patches are off-centre (the shift),
and normal patches are centred on bright spots, so a bright blob near the centre is common in both classes.
:func:`centre_contrast_auc` measures what is left of that cue: the ROC AUC of "centre brighter than the patch"
alone, with the controls and without them (lesions exactly centred, normal patches anywhere in the breast).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from mammo_utils.prepare.io import read_image
from mammo_utils.prepare.preprocess import breast_mask
from mammo_utils.protocols.items import save_npy

PATCH_COLUMNS = ["item_id", "image_id", "patient_id", "label", "fold", "array_path", "site_id", "kind", "x", "y",
                 "size_px"]


@dataclass(frozen=True)
class PatchPlan:
    """How patches are cut (all lengths in pixels of the original film).

    Attributes:
        size_px: side of a patch. patches_per_site: overlapping patches per site.
        jitter_px: the largest shift of a patch's centre from its site, in x and in y (default: a quarter side).
        normal_sites_per_film: bright spots sampled per normal film.
    """

    size_px: int = 64
    patches_per_site: int = 4
    jitter_px: int = -1
    normal_sites_per_film: int = 1

    @property
    def jitter(self) -> int:
        return self.size_px // 4 if self.jitter_px < 0 else self.jitter_px


def lesion_sites(images: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """The located findings of abnormal films: ``image_id, cx, cy, r`` in original pixels (top-left origin).

    A circle gives its centre and radius; a box its centre and half its larger side; a mask (the synthetic set)
    the centre and radius the manifest stores beside it. Findings without coordinates are left out.
    """
    abnormal = set(images.loc[images.abnormal.astype(int) == 1, "image_id"].astype(str))
    rows = []
    for les in lesions.itertuples():
        if str(les.image_id) not in abnormal or les.shape not in ("circle", "box", "mask"):
            continue
        if les.shape == "box" or not np.isfinite(float(les.cx)):
            if not np.isfinite(float(les.x0)):
                continue
            cx, cy = (float(les.x0) + float(les.x1)) / 2, (float(les.y0) + float(les.y1)) / 2
            r = max(float(les.x1) - float(les.x0), float(les.y1) - float(les.y0)) / 2
        else:
            cx, cy, r = float(les.cx), float(les.cy), float(les.r)
        rows.append({"image_id": str(les.image_id), "cx": cx, "cy": cy, "r": r})
    return pd.DataFrame(rows, columns=["image_id", "cx", "cy", "r"])


def bright_spots(pixels: np.ndarray, n: int, size_px: int, rng: np.random.Generator) -> list[tuple[float, float]]:
    """``n`` bright spots of a film's breast, as ``(x, y)``: local maxima of the film smoothed at about a tenth
    of a patch that stand out from their surroundings (prominence, the maximum minus the window's minimum, at
    least a quarter of the film's most prominent spot), at least half a patch inside the breast, drawn at random
    among the brightest ``4 n``."""
    breast = breast_mask(pixels)
    inner = ndimage.binary_erosion(breast, iterations=max(1, size_px // 2))
    if not inner.any():
        inner = breast
    smooth = ndimage.gaussian_filter(pixels.astype(np.float32), max(1.0, size_px / 10))
    window = max(3, size_px // 2)
    # Local maxima that stand out (a flat plateau is its own "maximum" everywhere and is not a spot; nor is the
    # plateau's rim where the window reaches the breast's falling edge).
    prominence = smooth - ndimage.minimum_filter(smooth, size=window)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=window)) & inner & (prominence > 1e-3)
    if peaks.any():
        peaks &= prominence >= 0.25 * prominence[peaks].max()
    ys, xs = np.nonzero(peaks)
    if not len(xs):
        ys, xs = np.nonzero(inner)
    order = np.argsort(-smooth[ys, xs])[: 4 * n]
    pick = rng.choice(order, size=min(n, len(order)), replace=False)
    return [(float(xs[i]), float(ys[i])) for i in pick]


def random_breast_points(pixels: np.ndarray, n: int, size_px: int, rng: np.random.Generator) -> list[tuple]:
    """``n`` points drawn uniformly at least half a patch inside the breast (the uncontrolled normal patches)."""
    inner = ndimage.binary_erosion(breast_mask(pixels), iterations=max(1, size_px // 2))
    ys, xs = np.nonzero(inner if inner.any() else np.ones_like(pixels, dtype=bool))
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return [(float(xs[i]), float(ys[i])) for i in pick]


def cut(pixels: np.ndarray, x: float, y: float, size_px: int) -> tuple[np.ndarray, float, float]:
    """The ``size_px`` square of ``pixels`` centred on ``(x, y)``, moved inside the film where it would cross its
    edge; returns the patch and the centre actually used."""
    h, w = pixels.shape
    x0 = int(np.clip(round(x - size_px / 2), 0, max(0, w - size_px)))
    y0 = int(np.clip(round(y - size_px / 2), 0, max(0, h - size_px)))
    patch = pixels[y0 : y0 + size_px, x0 : x0 + size_px]
    return patch, x0 + size_px / 2, y0 + size_px / 2


def site_patches(pixels: np.ndarray, x: float, y: float, plan: PatchPlan, rng: np.random.Generator) -> list:
    """``patches_per_site`` overlapping patches around a site: ``(patch, x, y)`` with the centre shifted by up to
    ``plan.jitter`` pixels in x and y."""
    out = []
    for _ in range(plan.patches_per_site):
        dx, dy = rng.uniform(-plan.jitter, plan.jitter, size=2)
        out.append(cut(pixels, x + dx, y + dy, plan.size_px))
    return out


def plan_key(plan: PatchPlan, images: pd.DataFrame, lesions: pd.DataFrame, seed: int) -> str:
    """A short hash of everything that changes the patches (the plan, the films, their findings, the seed)."""
    blob = json.dumps({"plan": asdict(plan), "seed": seed, "films": sorted(images.image_id.astype(str)),
                       "sites": lesion_sites(images, lesions).round(2).to_dict("records")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def make_patches(images: pd.DataFrame, lesions: pd.DataFrame, root: Path, folder: Path, plan: PatchPlan,
                 seed: int) -> pd.DataFrame:
    """Cut every site's patches from the raw films into ``folder`` (reused when ``patches.csv`` is there).

    Args:
        images: the manifest's films (``path`` relative to ``root``; ``fold`` by woman). lesions: its findings.
        root: the dataset folder. folder: where the patch arrays and ``patches.csv`` go.
        plan: sizes and counts. seed: the draws (sites and shifts), per film.

    Returns:
        The patch table (:data:`PATCH_COLUMNS`): ``label`` 1 for lesion patches, 0 for normal tissue.
    """
    folder = Path(folder)
    table = folder / "patches.csv"
    if table.exists():
        return pd.read_csv(table, dtype={"item_id": str, "image_id": str, "patient_id": str, "site_id": str})
    sites = lesion_sites(images, lesions)
    rows = []
    for i, film in enumerate(images.sort_values("image_id").itertuples()):
        rng = np.random.default_rng([seed, i])
        if int(film.abnormal) == 1:
            centres = [(s.cx, s.cy, "lesion") for s in sites[sites.image_id == str(film.image_id)].itertuples()]
        else:
            centres = []
        if int(film.abnormal) == 0 or centres:
            pixels = read_image(Path(root) / film.path).pixels
        if int(film.abnormal) == 0:
            centres = [(x, y, "normal") for x, y in
                       bright_spots(pixels, plan.normal_sites_per_film, plan.size_px, rng)]
        for s, (x, y, kind) in enumerate(centres):
            site = f"{film.image_id}-s{s}"
            for j, (patch, px, py) in enumerate(site_patches(pixels, x, y, plan, rng)):
                item = f"{site}-p{j}"
                save_npy(folder / f"{item}.npy", patch)
                rows.append({"item_id": item, "image_id": str(film.image_id), "patient_id": str(film.patient_id),
                             "label": int(kind == "lesion"), "fold": int(film.fold),
                             "array_path": str(folder / f"{item}.npy"), "site_id": site, "kind": kind, "x": px,
                             "y": py, "size_px": plan.size_px})
    out = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    out.to_csv(folder / ".patches.csv.tmp", index=False)
    (folder / ".patches.csv.tmp").replace(table)
    return out


def centre_contrast(patches: np.ndarray) -> np.ndarray:
    """How much brighter each patch's centre (the middle quarter of its side) is than the whole patch: the
    "something is centred here" cue, with no learning at all. ``patches``: (N, S, S)."""
    s = patches.shape[-1]
    lo, hi = 3 * s // 8, s - 3 * s // 8
    return patches[:, lo:hi, lo:hi].mean(axis=(1, 2)) - patches.mean(axis=(1, 2))


def centre_contrast_auc(images: pd.DataFrame, lesions: pd.DataFrame, root: Path, plan: PatchPlan, seed: int,
                        patches: pd.DataFrame) -> dict[str, float]:
    """ROC AUC of the centre-contrast cue alone (lesion vs normal), with the controls (the study's patches) and
    without them (each lesion exactly centred; each normal patch at a random point of the breast).

    0.5 means the cue says nothing; the farther from 0.5 without the controls, the more a "centred blob" detector
    could have scored there.
    """
    from sklearn.metrics import roc_auc_score

    controlled = np.stack([np.load(p, allow_pickle=False).astype(np.float32) for p in patches.array_path])
    sites = lesion_sites(images, lesions)
    plain, labels = [], []
    for i, film in enumerate(images.sort_values("image_id").itertuples()):
        rng = np.random.default_rng([seed, i, 1])
        here = sites[sites.image_id == str(film.image_id)]
        if int(film.abnormal) == 1 and here.empty:
            continue
        pixels = read_image(Path(root) / film.path).pixels
        if int(film.abnormal) == 1:
            points = [(s.cx, s.cy) for s in here.itertuples()]
        else:
            points = random_breast_points(pixels, plan.normal_sites_per_film, plan.size_px, rng)
        for x, y in points:
            plain.append(cut(pixels, x, y, plan.size_px)[0])
            labels.append(int(film.abnormal))
    out = {"with_controls": float(roc_auc_score(patches.label, centre_contrast(controlled)))}
    if len(set(labels)) == 2:
        out["without_controls"] = float(roc_auc_score(labels, centre_contrast(np.stack(plain))))
    return out
