"""Figures of stage 02: pairs of views, the pretraining curves, and the embedding of the features.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import (
    save_figure,
    styled,
    subplots,
)


@styled
def view_pairs(pairs: list[tuple[np.ndarray, np.ndarray]], path: Path) -> Path:
    """Pairs of augmented views of the same image, one pair per column."""
    fig, axes = subplots(2, len(pairs), figsize=(2.0 * len(pairs), 4.2), squeeze=False)
    for j, (a, b) in enumerate(pairs):
        for i, v in enumerate((a, b)):
            axes[i, j].imshow(np.asarray(v, dtype=np.float32), cmap="gray", vmin=0, vmax=1)
            axes[i, j].axis("off")
        axes[0, j].set_title(f"image {j + 1}", fontsize=8)
    fig.suptitle("Two random views of each image: the network must map both to nearby embeddings")
    return save_figure(fig, path)


@styled
def pretrain_curves(history: pd.DataFrame, path: Path) -> Path:
    """SimCLR loss per epoch and, when present, kNN accuracy of the embeddings on the validation split."""
    has_knn = "val_knn_acc" in history and history["val_knn_acc"].notna().any()
    fig, axes = subplots(1, 2 if has_knn else 1, figsize=(10 if has_knn else 5, 3.4), squeeze=False)
    loss = history.dropna(subset=["train_loss_epoch"]) if "train_loss_epoch" in history else history
    sns.lineplot(data=loss, x="epoch", y="train_loss_epoch", marker="o", ax=axes[0, 0])
    axes[0, 0].set(title="NT-Xent loss (train)", ylabel="loss")
    if has_knn:
        knn = history.dropna(subset=["val_knn_acc"])
        sns.lineplot(data=knn, x="epoch", y="val_knn_acc", marker="o", ax=axes[0, 1], color="C2")
        if "knn_chance" in knn:
            axes[0, 1].axhline(float(knn["knn_chance"].iloc[-1]), ls="--", c="grey", label="chance")
            axes[0, 1].legend()
        axes[0, 1].set(title="kNN balanced accuracy (val, no labels in training)", ylabel="balanced accuracy",
                       ylim=(0, 1))
    return save_figure(fig, path)


@styled
def embedding_scatter(xy: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    fig, ax = subplots(figsize=(5, 4.2))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=labels, ax=ax, s=18, palette="Set1")
    ax.set(title=title, xticks=[], yticks=[])
    return save_figure(fig, path)
