"""A3's items: square patches of the breast at the scale stage 02 pretrained on, lesion vs normal tissue, with
controls.

A whole MIAS film shrunk to 128 px turns the median lesion (radius 41 px of 1,024) into a 5 px smudge. Patches are
cut from stage 01's copy of each film at ``crops.film_size_px`` (512 px on MIAS, where that lesion keeps a radius
of about 20 px), ``crops.size_px`` wide: the regions stage 02's backbones pretrained on. The task becomes "is there
a lesion in this patch?", with the location given: **an easier task than screening whole films**.

Sites and patches:

- a *lesion site* is a located finding of an abnormal film (:func:`mammo_utils.prepare.crops.lesion_sites`:
  circle, box or mask; findings without coordinates are left out); a *normal site* is a bright spot of a normal
  film's breast (a local maximum of the smoothed film), ``normal_sites_per_film`` per film;
- each site gives ``patches_per_site`` overlapping patches, centred on the site and shifted by up to a quarter
  side in x and y, the same way for both classes.

The controls keep an easy cue from being the signal: lesion patches are off-centre (the shift), and normal patches
are centred on bright spots, so a bright blob near the centre is common in both classes; with ``match_sd`` each
normal film's spot is the candidate whose patch has the grey-level spread (SD) closest to a lesion patch's, drawn
at random, so that "more texture" is not the signal either. :func:`statistics` gives the single statistics the
study scores beside the models (patch mean, patch SD, centre brighter than the patch): a model that does no
better than one of them has learnt nothing more.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from mammo_utils.prepare.crops import cut, lesion_sites
from mammo_utils.protocols.items import save_npy

PATCH_COLUMNS = ["item_id", "image_id", "patient_id", "label", "fold", "array_path", "site_id", "kind", "x", "y",
                 "size_px"]
STATISTICS = ("mean", "sd", "centre")


@dataclass(frozen=True)
class PatchPlan:
    """How patches are cut (lengths in pixels of the film at ``crops.film_size_px``).

    Attributes:
        size_px: side of a patch. patches_per_site: overlapping patches per site.
        normal_sites_per_film: bright spots sampled per normal film. match_sd: choose each normal film's spots
        so that their patches' SD matches lesion patches' (the SD control).
    """

    size_px: int = 64
    patches_per_site: int = 4
    normal_sites_per_film: int = 1
    match_sd: bool = True

    @property
    def jitter(self) -> int:
        """The largest shift of a patch's centre from its site, in x and in y: a quarter side."""
        return self.size_px // 4


def bright_spots(pixels: np.ndarray, n: int, size_px: int) -> list[tuple[float, float]]:
    """Up to ``n`` bright spots of a film's breast (zero outside it), brightest first, as ``(x, y)``: local maxima
    of the film smoothed at about a tenth of a patch that stand out from their surroundings (prominence, the
    maximum minus the window's minimum, at least a quarter of the film's most prominent spot), at least half a
    patch inside the breast where the breast is large enough for that."""
    breast = pixels > 0
    inner = ndimage.binary_erosion(breast, iterations=max(1, size_px // 2))
    if not inner.any():
        inner = breast if breast.any() else np.ones_like(breast)
    smooth = ndimage.gaussian_filter(pixels.astype(np.float32), max(1.0, size_px / 10))
    window = max(3, size_px // 2)
    # A flat plateau is its own "maximum" everywhere and is not a spot; nor is its rim at the breast's edge.
    prominence = smooth - ndimage.minimum_filter(smooth, size=window)
    peaks = (smooth == ndimage.maximum_filter(smooth, size=window)) & inner & (prominence > 1e-3)
    if peaks.any():
        peaks &= prominence >= 0.25 * prominence[peaks].max()
    ys, xs = np.nonzero(peaks)
    if not len(xs):
        ys, xs = np.nonzero(inner)
    order = np.argsort(-smooth[ys, xs], kind="stable")[:n]
    return [(float(xs[i]), float(ys[i])) for i in order]


def random_breast_points(pixels: np.ndarray, n: int, size_px: int, rng: np.random.Generator) -> list[tuple]:
    """``n`` points drawn uniformly at least half a patch inside the breast (the uncontrolled normal patches)."""
    inner = ndimage.binary_erosion(pixels > 0, iterations=max(1, size_px // 2))
    ys, xs = np.nonzero(inner if inner.any() else np.ones_like(pixels, dtype=bool))
    pick = rng.choice(len(xs), size=min(n, len(xs)), replace=False)
    return [(float(xs[i]), float(ys[i])) for i in pick]


def site_patches(pixels: np.ndarray, x: float, y: float, plan: PatchPlan, rng: np.random.Generator) -> list:
    """``patches_per_site`` overlapping patches around a site: ``(patch, x, y)`` with the centre shifted by up to
    ``plan.jitter`` pixels in x and y (the centre actually cut, moved inside the film at its edges)."""
    out = []
    h, w = pixels.shape
    half = plan.size_px / 2
    for _ in range(plan.patches_per_site):
        dx, dy = rng.uniform(-plan.jitter, plan.jitter, size=2)
        cx = float(np.clip(round(x + dx - half), 0, max(0, w - plan.size_px))) + half
        cy = float(np.clip(round(y + dy - half), 0, max(0, h - plan.size_px))) + half
        out.append((cut(pixels, cx, cy, plan.size_px), cx, cy))
    return out


def statistics(patches: np.ndarray) -> dict[str, np.ndarray]:
    """The single statistics of (N, S, S) patches: grey-level ``mean``, ``sd``, and ``centre``: how much brighter
    the middle quarter of the side is than the whole patch (the "something is centred here" cue)."""
    x = np.asarray(patches, dtype=np.float32)
    s = x.shape[-1]
    lo, hi = 3 * s // 8, s - 3 * s // 8
    return {"mean": x.mean(axis=(1, 2)), "sd": x.std(axis=(1, 2)),
            "centre": x[:, lo:hi, lo:hi].mean(axis=(1, 2)) - x.mean(axis=(1, 2))}


def plan_key(plan: PatchPlan, index: pd.DataFrame, sites: pd.DataFrame, seed: int) -> str:
    """A short hash of everything that changes the patches (the plan, the films, their findings, the seed)."""
    blob = json.dumps({"plan": asdict(plan), "seed": seed, "films": sorted(index.hires_path.astype(str)),
                       "sites": sites.round(2).to_dict("records")}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:10]


def _normal_spot(pixels: np.ndarray, plan: PatchPlan, target_sd: float | None, rng: np.random.Generator
                 ) -> list[tuple[float, float]]:
    """A normal film's sites: its brightest spots, or (SD control) among its 8 brightest per site, the one whose
    patch's SD is closest to ``target_sd``."""
    n = plan.normal_sites_per_film
    if target_sd is None:
        spots = bright_spots(pixels, 4 * n, plan.size_px)
        pick = rng.choice(len(spots), size=min(n, len(spots)), replace=False)
        return [spots[i] for i in pick]
    spots = bright_spots(pixels, 8 * n, plan.size_px)
    sds = np.array([cut(pixels, x, y, plan.size_px).astype(np.float32).std() for x, y in spots])
    return [spots[i] for i in np.argsort(np.abs(sds - target_sd), kind="stable")[:n]]


def make_patches(index: pd.DataFrame, sites: pd.DataFrame, films: dict[str, np.ndarray], folder: Path,
                 plan: PatchPlan, seed: int) -> pd.DataFrame:
    """Cut every site's patches into ``folder`` (reused when ``patches.csv`` is there).

    Args:
        index: stage 01's index (``image_id, patient_id, abnormal, fold``). sites: the located findings at the
            films' scale (``image_id, x, y, r``). films: image_id -> the film at ``crops.film_size_px``.
        folder: where the patch arrays and ``patches.csv`` go. plan: sizes and counts. seed: the draws, per film.

    Returns:
        The patch table (:data:`PATCH_COLUMNS`): ``label`` 1 for lesion patches, 0 for normal tissue.
    """
    folder = Path(folder)
    table = folder / "patches.csv"
    if table.exists():
        return pd.read_csv(table, dtype={"item_id": str, "image_id": str, "patient_id": str, "site_id": str})
    by_film = {k: g for k, g in sites.groupby("image_id")}
    ordered = list(index.sort_values("image_id").itertuples())
    rows, lesion_sd = [], []
    # Lesion films first, so the SD control can draw its targets from the lesion patches.
    for abnormal in (1, 0):
        for i, film in enumerate(ordered):
            if int(film.abnormal) != abnormal:
                continue
            image_id, rng = str(film.image_id), np.random.default_rng([seed, i])
            pixels = films[image_id].astype(np.float32)
            if abnormal:
                centres = [(s.x, s.y, "lesion") for s in by_film.get(image_id, sites.iloc[:0]).itertuples()]
            else:
                target = float(rng.choice(lesion_sd)) if plan.match_sd and lesion_sd else None
                centres = [(x, y, "normal") for x, y in _normal_spot(pixels, plan, target, rng)]
            for s, (x, y, kind) in enumerate(centres):
                site = f"{image_id}-s{s}"
                for j, (patch, px, py) in enumerate(site_patches(pixels, x, y, plan, rng)):
                    item = f"{site}-p{j}"
                    save_npy(folder / f"{item}.npy", patch)
                    if kind == "lesion":
                        lesion_sd.append(float(patch.std()))
                    rows.append({"item_id": item, "image_id": image_id, "patient_id": str(film.patient_id),
                                 "label": int(kind == "lesion"), "fold": int(film.fold),
                                 "array_path": str(folder / f"{item}.npy"), "site_id": site, "kind": kind, "x": px,
                                 "y": py, "size_px": plan.size_px})
    out = pd.DataFrame(rows, columns=PATCH_COLUMNS)
    out.to_csv(folder / ".patches.csv.tmp", index=False)
    (folder / ".patches.csv.tmp").replace(table)
    return out


def control_aucs(index: pd.DataFrame, sites: pd.DataFrame, films: dict[str, np.ndarray], plan: PatchPlan,
                 seed: int, patches: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    """ROC AUC of each single statistic (lesion vs normal, all patches pooled, no split), with the controls (the
    study's patches) and without them (each lesion exactly centred; each normal patch at a random point of the
    breast). 0.5: the statistic says nothing; a model must beat the largest of these to have learnt more."""
    from sklearn.metrics import roc_auc_score

    plain, plain_labels = [], []
    by_film = {k: g for k, g in sites.groupby("image_id")}
    for i, film in enumerate(index.sort_values("image_id").itertuples()):
        image_id, rng = str(film.image_id), np.random.default_rng([seed, i, 1])
        pixels = films[image_id].astype(np.float32)
        if int(film.abnormal) == 1:
            points = [(s.x, s.y) for s in by_film.get(image_id, sites.iloc[:0]).itertuples()]
        else:
            points = random_breast_points(pixels, plan.normal_sites_per_film, plan.size_px, rng)
        for x, y in points:
            plain.append(cut(pixels, x, y, plan.size_px))
            plain_labels.append(int(film.abnormal))
    with_controls, without = statistics(patches), statistics(np.stack(plain)) if plain else {}
    out: dict[str, dict[str, float]] = {}
    for name in STATISTICS:
        entry = {}
        if len(set(labels)) == 2:
            entry["with_controls"] = float(roc_auc_score(labels, with_controls[name]))
        if len(set(plain_labels)) == 2:
            entry["without_controls"] = float(roc_auc_score(plain_labels, without[name]))
        out[name] = entry
    return out


def study_sites(index: pd.DataFrame, lesions: pd.DataFrame, film_size_px: int) -> pd.DataFrame:
    """The located findings at the films' scale (``image_id, x, y, r``), as stage 01 places its lesion crops."""
    return lesion_sites(index, lesions, film_size_px)
