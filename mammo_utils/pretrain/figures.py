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
def pretrain_curves(history: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Did pretraining learn? Per epoch: the loss beside the constant-output level ln(2N - 1), the pretext accuracy
    beside its chance 1 / (2N - 1), and the kNN monitor beside its untrained value (epoch 0) and chance (0.5).

    ``history``: the columns of :data:`~mammo_utils.pretrain.stage.HISTORY_COLUMNS`.
    """
    fig, axes = subplots(1, 3, figsize=(13, 3.5), squeeze=False)
    trained = history[history.epoch > 0]
    ax = axes[0, 0]
    ax.plot(trained.step, trained.loss, "o-", label="loss (train)")
    ax.plot(trained.step, trained.loss_constant_output, "--", c="grey", label="ln(2N − 1): one vector for all")
    ax.set(title="Contrastive loss", xlabel="optimisation step", ylabel="loss", ylim=(0, None))
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.plot(trained.step, trained.pretext_top1, "o-", c="C1", label="partner found first")
    ax.plot(trained.step, trained.pretext_chance, "--", c="grey", label="chance 1 / (2N − 1)")
    ax.set(title="Pretext accuracy", xlabel="optimisation step", ylabel="top-1", ylim=(0, 1))
    ax.legend(fontsize=8)
    ax = axes[0, 2]
    knn = history.dropna(subset=["knn"])
    ax.plot(knn.step, knn.knn, "o-", c="C2", label="kNN, validation women's crops")
    if len(knn) and knn.epoch.iloc[0] == 0:
        ax.axhline(float(knn.knn.iloc[0]), ls=":", c="C2", label="untrained network")
    ax.axhline(0.5, ls="--", c="grey", label="chance")
    ax.set(title="kNN monitor (no label trains)", xlabel="optimisation step", ylabel="balanced accuracy",
           ylim=(0.3, 1))
    ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


@styled
def embedding_scatter(xy: np.ndarray, labels: list[str], path: Path, title: str) -> Path:
    fig, ax = subplots(figsize=(5, 4.2))
    sns.scatterplot(x=xy[:, 0], y=xy[:, 1], hue=labels, ax=ax, s=18, palette="Set1")
    ax.set(title=title, xticks=[], yticks=[])
    return save_figure(fig, path)
