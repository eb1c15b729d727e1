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


def pointing_game(cam: np.ndarray, lesion_mask: np.ndarray) -> bool:
    """Whether the CAM's maximum falls inside the lesion (a hit in the pointing game).

    A flat map (maximum equal to minimum) points nowhere and counts as a miss; among tied maxima the first
    in row-major order is taken (ties are rare in real-valued maps).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.size == 0 or not np.isfinite(cam).all() or cam.max() <= cam.min():
        return False
    return bool(np.asarray(lesion_mask).reshape(-1)[int(np.argmax(cam))] > 0)


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
