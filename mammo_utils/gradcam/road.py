"""Is a map faithful to the model? ROAD (Rong et al. 2022, "A Consistent and Efficient Evaluation Strategy for
Attribution Methods"): remove the pixels the map calls relevant, or irrelevant, and see how the logit moves, with
pytorch-grad-cam's perturbations and imputer."""

from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer

ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the library's default thresholds


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
