"""Reference solutions of notebook 01 (data preparation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import ndimage


def my_breast_mask(pixels: np.ndarray) -> np.ndarray:
    """Boolean mask of the breast in a film (float, [0, 1], bright = dense), same shape as ``pixels``.

    A global threshold separates the breast from the dark background; keeping only the largest connected
    region drops the side marker and any label that does not touch the breast.
    """
    foreground = ndimage.gaussian_filter(pixels, 1.0) > 0.1
    regions, n = ndimage.label(foreground)
    if n == 0:
        return foreground
    largest = 1 + np.argmax(np.bincount(regions.ravel())[1:])
    return ndimage.binary_fill_holes(regions == largest)


def my_needs_flip(crop_mask: np.ndarray) -> bool:
    """True when the chest wall is on the right of this cropped breast mask, so the crop must be mirrored.

    The film cuts the breast at the chest wall, so the breast covers that edge of its box along many rows; the
    nipple side's skin line touches its edge at one point. Compare the outermost columns.
    """
    k = max(1, crop_mask.shape[1] // 50)
    return bool(crop_mask[:, -k:].mean() > crop_mask[:, :k].mean())


def my_patient_split(images: pd.DataFrame, test_fraction: float, seed: int) -> pd.Series:
    """``"train"`` or ``"test"`` for each image (indexed like ``images``), assigned by woman: within each group
    of women with the same worst label, a seeded shuffle sends ``round(n * test_fraction)`` of them to test."""
    worst = (images["abnormal"] + images["malignant"]).groupby(images["patient_id"]).max()
    rng = np.random.default_rng(seed)
    test_women = []
    for label in sorted(worst.unique()):
        women = np.array(sorted(worst.index[worst == label]))
        shuffled = women[rng.permutation(len(women))]
        test_women += list(shuffled[: round(len(women) * test_fraction)])
    return images["patient_id"].isin(test_women).map({True: "test", False: "train"})


def my_leaked_women(images: pd.DataFrame, test_image_ids: list[str]) -> int:
    """The number of women with images both among ``test_image_ids`` and outside them."""
    in_test = images["image_id"].isin(test_image_ids)
    sides_per_woman = in_test.groupby(images["patient_id"]).nunique()
    return int((sides_per_woman == 2).sum())
