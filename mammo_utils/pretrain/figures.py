"""Figures of stage 02: pairs of views, the pretraining curves, and the embedding of the features.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

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


@styled
def simclr_diagram(region: np.ndarray, view0: np.ndarray, view1: np.ndarray, dims: tuple[int, int],
                   path: Path) -> Path:
    """SimCLR on one example, drawn with the example's own pixels: a region of the breast, its two views, the
    shared encoder f and head g, and NT-Xent pulling the pair together and pushing the other regions' views away.

    Args:
        region: (R, R) the region both views are cut from. view0, view1: (S, S) the two views.
        dims: (D, d), the sizes of h = f(x) and z = g(h). path: the PNG to write.
    """
    fig = Figure(figsize=(11, 3.4))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set(xlim=(0, 11), ylim=(0, 3.4)), ax.axis("off")

    def image(img: np.ndarray, x: float, y: float, size: float, title: str) -> None:
        ax.imshow(np.asarray(img, np.float32), cmap="gray", vmin=0, vmax=1, extent=(x, x + size, y, y + size))
        ax.text(x + size / 2, y + size + 0.08, title, ha="center", va="bottom", fontsize=9)

    def box(x: float, y: float, text: str, colour: str) -> None:
        ax.add_patch(FancyBboxPatch((x, y), 1.3, 0.6, boxstyle="round,pad=0.05", fc=colour, ec="black"))
        ax.text(x + 0.65, y + 0.3, text, ha="center", va="center", fontsize=9)

    def arrow(x0: float, y0: float, x1: float, y1: float, text: str = "") -> None:
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color="black"))
        if text:
            ax.text((x0 + x1) / 2, (y0 + y1) / 2 + 0.08, text, ha="center", va="bottom", fontsize=8)

    image(region, 0.1, 1.0, 1.4, "a region of the breast")
    ax.text(0.8, 0.9, "two random views:\ncrop, flips, intensity, blur", ha="center", va="top", fontsize=8)
    (D, d) = dims
    for y, view, name in ((2.0, view0, "view 1"), (0.2, view1, "view 2")):
        arrow(1.55, 1.7, 2.25, y + 0.5)
        image(view, 2.3, y, 1.0, name)
        arrow(3.35, y + 0.5, 3.95, y + 0.5)
        box(4.0, y + 0.2, "encoder f\n(ResNet)", "#cfe2f3")
        arrow(5.35, y + 0.5, 5.95, y + 0.5, f"h ({D})")
        box(6.0, y + 0.2, "head g\n(MLP)", "#d9ead3")
        arrow(7.35, y + 0.5, 7.95, y + 0.5, f"z ({d})")
    ax.text(4.65, 1.45, "the same weights", ha="center", va="center", fontsize=8, style="italic")
    ax.add_patch(FancyBboxPatch((8.0, 0.55), 2.8, 2.3, boxstyle="round,pad=0.05", fc="#fce5cd", ec="black"))
    ax.text(9.4, 1.7, "NT-Xent\npull z1 and z2 together,\npush away the 2N - 2 views\nof the other regions\n"
            "in the batch", ha="center", va="center", fontsize=9)
    ax.text(5.5, 0.02, "After pretraining g is thrown away; f (h) is what notebook 03 fine-tunes.", ha="center",
            va="bottom", fontsize=8)
    return save_figure(fig, path)
