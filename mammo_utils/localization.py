"""Scores of a class activation map: does it point at the lesion, and does the model depend on what it shows?

Localisation against the radiologists' marks: the pointing game (Zhang et al. 2016, "Top-down Neural
Attention by Excitation Backprop") and the fraction of the map's energy inside the lesion (Wang et al. 2020,
Score-CAM), each beside its chance level (:func:`chance_level`). Faithfulness: ROAD (Rong et al. 2022, "A
Consistent and Efficient Evaluation Strategy for Attribution Methods"), with pytorch-grad-cam's
perturbations. Averages come with patient-level bootstrap intervals (:func:`patient_bootstrap_ci`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

from .metrics import bootstrap_ci

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the library's default thresholds


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
    patient's images come along; :func:`mammo_utils.metrics.bootstrap_ci`). NaN values are left out first.

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


def road_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    cams: np.ndarray,
    percentiles: tuple[int, ...] = ROAD_PERCENTILES,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Per-image ROAD score (Rong et al. 2022; higher = more faithful), in logit units.

    ROAD removes the most (MoRF) and least (LeRF) relevant pixels, fills them with the library's noisy
    linear imputer and scores ``(ΔLeRF - ΔMoRF) / 2`` averaged over the percentiles, as the library's
    ``ROADCombined`` does. The Δs share the unperturbed score, which cancels; so this uses the library's
    perturbations (``RemoveLeastRelevantFirst`` / ``RemoveMostRelevantFirst`` with ``NoisyLinearImputer``)
    in ``ROADCombined``'s order and scores all perturbed images in a few batched forward passes instead of
    ``4 x len(percentiles)`` small ones (same numbers for the same seed). The imputer works on (C, H, W)
    tensors of any C: one-channel mammograms need no change.

    Two details: the logit itself is the score (one number per image, as ``ClassifierOutputTarget(0)``);
    and a tiny seeded jitter breaks ties in the maps, because the library thresholds with
    ``cam < percentile``: on a map with many zeros (common after Grad-CAM's ReLU) nothing would be kept,
    every pixel imputed and the sparse system singular (NaN). With the jitter, tied pixels are removed in
    random order.

    Args:
        model: the classifier, (B, 1, S, S) images in [0, 1] -> (B, 1) logits.
        images: (B, 1, S, S) images in [0, 1].
        cams: (B, S, S) maps of those images.
        percentiles: percentages of pixels removed.
        seed: seed of the jitter and of the imputer's noise.
        batch_size: perturbed images per forward pass.

    Returns:
        (B,) float64 scores.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    jittered = np.asarray(cams, dtype=np.float32) + 1e-6 * rng.random(np.shape(cams), dtype=np.float32)
    x = images.float().cpu()
    imputer = NoisyLinearImputer()
    torch.manual_seed(seed)  # the imputer's noise
    model.eval()
    after = {}
    for name, perturbation in (("lerf", RemoveLeastRelevantFirst), ("morf", RemoveMostRelevantFirst)):
        perturbed = torch.stack([
            perturbation(p, imputer)(x[i], torch.from_numpy(jittered[i])) for p in percentiles for i in range(len(x))
        ])
        with torch.no_grad():
            logits = torch.cat([model(b.to(device)) for b in perturbed.split(batch_size)])
        after[name] = logits[:, 0].double().cpu().numpy().reshape(len(percentiles), len(x)).mean(axis=0)
    return (after["lerf"] - after["morf"]) / 2
