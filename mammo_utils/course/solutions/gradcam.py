"""Reference solutions of notebook 05 (Grad-CAM and the scores of a map)."""

from __future__ import annotations

import numpy as np
import torch


def my_grad_cam(activations: torch.Tensor, gradients: torch.Tensor) -> torch.Tensor:
    r"""Grad-CAM (Selvaraju et al. 2017) of one image on the feature grid of the target layer.

    :math:`\alpha_k = \frac{1}{Z}\sum_{i,j} \partial y / \partial A^k_{ij}` (one weight per channel, the gradient
    averaged over the :math:`Z = h w` cells), then :math:`\mathrm{ReLU}(\sum_k \alpha_k A^k)`.

    Args:
        activations: (C, h, w) output of the target layer for the image.
        gradients: (C, h, w) gradient of the logit with respect to those activations.

    Returns:
        (h, w) map, not scaled.
    """
    weights = gradients.mean(dim=(1, 2))  # alpha_k
    return torch.relu((weights[:, None, None] * activations).sum(dim=0))


def my_pointing_game(cam: np.ndarray, lesion_mask: np.ndarray) -> float:
    """1.0 when the map points inside the lesion, 0.0 when it points outside, NaN for a flat map (no peak).

    ``cam`` is the map on its own (h, w) grid, ``lesion_mask`` the lesion on the (H, W) image: the map points at
    the centre of its hottest cell (the first maximum in row-major order)."""
    cam, mask = np.asarray(cam), np.asarray(lesion_mask)
    if cam.max() <= cam.min():
        return float("nan")
    r, c = np.unravel_index(np.argmax(cam), cam.shape)
    row = int((r + 0.5) * mask.shape[0] / cam.shape[0])
    col = int((c + 0.5) * mask.shape[1] / cam.shape[1])
    return float(mask[row, col] > 0)


def my_energy_inside(cam: np.ndarray, lesion_mask: np.ndarray) -> float:
    """Share of the map's non-negative energy that lies inside the lesion; NaN when the map has none."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    total = cam.sum()
    if total <= 0:
        return float("nan")
    return float(cam[np.asarray(lesion_mask) > 0].sum() / total)


def my_chance_level(lesion_mask: np.ndarray, breast_mask: np.ndarray | None = None) -> float:
    """The lesion's share of the breast (of the whole grid without a breast mask): the score of a blind guess."""
    lesion = np.asarray(lesion_mask) > 0
    breast = np.ones_like(lesion) if breast_mask is None else np.asarray(breast_mask) > 0
    if not breast.any():
        return float("nan")
    return float((lesion & breast).sum() / breast.sum())
