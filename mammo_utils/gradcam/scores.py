"""Scores of a class activation map against the radiologists' marks: does it point at the lesion?

The pointing game (Zhang et al. 2016, "Top-down Neural Attention by Excitation Backprop") and the fraction of
the map's energy inside the lesion (Wang et al. 2020, Score-CAM), each beside its chance level
(:func:`chance_level`). Averages come with patient-level bootstrap intervals (:func:`patient_bootstrap_ci`).
Whether the model depends on what the map shows is another question: :mod:`mammo_utils.gradcam.road`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_utils.evaluate.metrics import bootstrap_ci
from mammo_utils.gradcam.cams import cam_peak


def pointing_game(cam: np.ndarray, lesion_mask: np.ndarray) -> float:
    """Whether the map points inside the lesion: 1.0 (a hit), 0.0 (a miss), or NaN for a flat map.

    The map points at the centre of its hottest cell (:func:`mammo_utils.gradcam.cams.cam_peak`): ``cam`` is
    the map on its own grid (h, w), the feature grid of ``compute_cams(..., on_grid=True)``, and ``lesion_mask``
    the lesion on the image (H, W). When the two have the same shape every cell is a pixel and this is the
    classic pointing game (Zhang et al. 2016): the lesion at the map's maximum. Among tied maxima the first in
    row-major order counts.

    Why not the maximum of the upsampled map: bilinear upsampling replicates the edge cells outwards, so a peak
    in the top row or left column becomes a plateau reaching the image border, and ``np.argmax`` takes its first
    pixel, on the border (7 of the 16 cells of a 4 x 4 grid): a miss made by the scoring, not by the map.

    Why no tolerance: Zhang et al. count a hit within 15 px of the annotation. On a 128 px input with 32 px
    cells, 15 px is nearly half a cell, and the score could no longer be read against the chance level
    (:func:`chance_level`, the lesion's share of the breast), which is the hit rate of a blind point. So the
    point must fall inside the lesion itself.

    A flat map (maximum equal to minimum: the ReLU removed every cell, or the method gave NaN) has no peak and
    makes no claim: it scores NaN and is left out of the averages, as :func:`energy_inside` leaves out a map
    with no energy. Stage 05 counts such maps (``n_flat``) and reads each score beside the chance level of the
    same images.
    """
    lesion = np.asarray(lesion_mask)
    peak = cam_peak(np.asarray(cam, dtype=np.float64), lesion.shape)
    if peak is None:
        return float("nan")
    col, row = peak
    return float(lesion[row, col] > 0)


def energy_inside(cam: np.ndarray, lesion_mask: np.ndarray) -> float:
    """Fraction of the CAM's energy (sum of its non-negative values) inside the lesion; NaN for a zero map."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    total = cam.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    return float(cam[np.asarray(lesion_mask) > 0].sum() / total)


def chance_level(lesion_mask: np.ndarray, breast_region: np.ndarray | None = None) -> float:
    """Area fraction of the lesion: the expected score of a map that knows nothing.

    A uniformly random maximum hits the lesion, and a flat map puts its energy inside it, with probability
    equal to the lesion's share of the region considered (the breast when given, otherwise the whole grid).
    """
    lesion = np.asarray(lesion_mask) > 0
    region = np.ones_like(lesion) if breast_region is None else np.asarray(breast_region) > 0
    area = region.sum()
    return float((lesion & region).sum() / area) if area else float("nan")


def patient_bootstrap_ci(
    values: np.ndarray,
    patient_ids: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean of per-image values with a percentile CI from resampling patients with replacement.

    Images of one patient are correlated, so patients, not images, are the unit resampled (all of a drawn
    patient's images come along; :func:`mammo_utils.evaluate.metrics.bootstrap_ci`). NaN values are left out first.

    Returns:
        ``{"estimate", "ci_low", "ci_high", "n", "n_patients"}`` (NaNs when no value is defined).
    """
    df = pd.DataFrame({"value": np.asarray(values, dtype=np.float64), "patient_id": np.asarray(patient_ids)})
    df = df[np.isfinite(df["value"])]
    if df.empty:
        nan = float("nan")
        return {"estimate": nan, "ci_low": nan, "ci_high": nan, "n": 0, "n_patients": 0}
    low, high = bootstrap_ci(df, lambda d: {"mean": float(d["value"].mean())}, n_resamples, level, seed)["mean"]
    return {
        "estimate": float(df["value"].mean()), "ci_low": low, "ci_high": high,
        "n": int(len(df)), "n_patients": int(df["patient_id"].astype(str).nunique()),
    }
