"""Figures of stage 01: the gallery of films with their lesions outlined, and the class balance.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import (
    label_name,
    save_figure,
    styled,
    subplots,
)


@styled
def gallery(arrays: np.ndarray, masks: list, titles: list[str], path: Path, ncols: int = 6) -> Path:
    """Preprocessed images in a grid, each lesion outlined in red."""
    n = len(arrays)
    nrows = max(1, int(np.ceil(n / ncols)))
    fig, axes = subplots(nrows, ncols, figsize=(2.2 * ncols, 2.4 * nrows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, img, mask, title in zip(axes.ravel(), arrays, masks, titles, strict=False):
        ax.imshow(np.asarray(img, dtype=np.float32), cmap="gray", vmin=0, vmax=1)
        if mask is not None and np.any(mask):
            ax.contour(np.asarray(mask, dtype=float), levels=[0.5], colors="red", linewidths=1.0)
        ax.set_title(title, fontsize=8)
    return save_figure(fig, path)


@styled
def class_balance(images: pd.DataFrame, path: Path, density_name: str = "breast density") -> Path:
    """Images per split and label (normal / benign / malignant), and per density where known."""
    df = images.assign(label=[label_name(a, m) for a, m in zip(images.abnormal, images.malignant, strict=True)])
    has_density = df["density"].astype(str).str.len().gt(0).any()
    fig, axes = subplots(1, 2 if has_density else 1, figsize=(11 if has_density else 6, 3.6), squeeze=False)
    order = ["normal", "benign", "malignant"]
    sns.countplot(data=df, x="split", hue="label", hue_order=order, order=["train", "val", "test"],
                  ax=axes[0, 0], palette="Set2")
    axes[0, 0].set_title("Images per split and label")
    if has_density:
        sns.countplot(data=df, x="density", hue="label", hue_order=order, ax=axes[0, 1], palette="Set2",
                      order=sorted(df["density"].astype(str).unique()))
        axes[0, 1].set_title(f"Images per {density_name}")
    return save_figure(fig, path)


@styled
def crop_gallery(arrays: np.ndarray, crops: pd.DataFrame, path: Path, n: int = 8, seed: int = 0) -> Path:
    """Two rows of the crop task: ``n`` crops around findings (top) and ``n`` of normal films (bottom)."""
    rng = np.random.default_rng(seed)
    fig, axes = subplots(2, n, figsize=(1.4 * n, 3.2), squeeze=False)
    for row, (label, name) in enumerate(((1, "around a finding"), (0, "normal film"))):
        idx = np.flatnonzero(crops.label.to_numpy() == label)
        pick = rng.choice(idx, size=min(n, len(idx)), replace=False) if len(idx) else []
        for ax in axes[row]:
            ax.axis("off")
        for ax, i in zip(axes[row], pick, strict=False):
            ax.imshow(np.asarray(arrays[i], dtype=np.float32), cmap="gray", vmin=0, vmax=1)
        axes[row, 0].set_title(name, loc="left", fontsize=9)
    fig.suptitle("The crop task: is there a lesion in this crop?", fontsize=10)
    return save_figure(fig, path)
