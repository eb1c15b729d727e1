"""Every figure of the stages, drawn with seaborn / matplotlib and saved as a PNG file.

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot, inside a seaborn style context
(:func:`styled`): importing this module changes neither matplotlib's backend nor a notebook's global style.
Every figure is written by :func:`save_figure` (atomically: a killed run leaves the old file or the new one).
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from .methods import INITS
from .paths import atomic_write_bytes

DPI = 120


def styled(draw):
    """Draw inside seaborn's whitegrid style and notebook context, leaving the global settings untouched."""

    @functools.wraps(draw)
    def wrapper(*args, **kwargs):
        with sns.axes_style("whitegrid"), sns.plotting_context("notebook"):
            return draw(*args, **kwargs)

    return wrapper


def subplots(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6, 4), **kwargs):
    """A new figure (not registered with pyplot) and its axes, like ``plt.subplots``."""
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **kwargs)


def save_figure(fig: Figure, path: Path, dpi: int = DPI) -> Path:
    """Write ``fig`` as a PNG to ``path`` atomically; returns the path."""
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def init_color(init: str):
    """One colour per initialisation in every figure (colour-blind palette), in the order of ``INITS``."""
    palette = sns.color_palette("colorblind", 8)
    name = str(init).split(",")[0].strip()
    k = INITS.index(name) if name in INITS else len(INITS) + sum(map(ord, name)) % (8 - len(INITS))
    return palette[k]


def label_name(abnormal: int, malignant: int) -> str:
    return "malignant" if malignant else "benign" if abnormal else "normal"


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


@styled
def finetune_curves(history: pd.DataFrame, path: Path) -> Path:
    """Validation ROC AUC along training, one line per initialisation (``history``: init, step, val_auc)."""
    fig, ax = subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=history, x="step", y="val_auc", hue="init", marker="o", ax=ax,
                 palette={i: init_color(i) for i in history["init"].unique()})
    ax.set(title="Fine-tuning: validation ROC AUC", xlabel="optimisation step", ylim=(0, 1.02))
    return save_figure(fig, path)


@styled
def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray, float]], path: Path, bands: dict | None = None) -> Path:
    """ROC curves; ``curves[name] = (fpr, tpr, auc)``; optional ``bands[name] = (grid, lo, hi)``."""
    fig, ax = subplots(figsize=(4.6, 4.4))
    for name, (fpr, tpr, auc) in curves.items():
        ax.plot(fpr, tpr, color=init_color(name), label=f"{name} (AUC {auc:.3f})")
        if bands and name in bands:
            grid, lo, hi = bands[name]
            ax.fill_between(grid, lo, hi, color=init_color(name), alpha=0.15)
    ax.plot([0, 1], [0, 1], ls="--", c="grey", lw=1)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC, held-out test split", xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="lower right", fontsize=8)
    return save_figure(fig, path)


@styled
def confusion_matrices(matrices: dict[str, np.ndarray], path: Path, labels: tuple[str, str]) -> Path:
    fig, axes = subplots(1, len(matrices), figsize=(3.8 * len(matrices), 3.4), squeeze=False)
    for ax, (name, cm) in zip(axes.ravel(), matrices.items(), strict=True):
        sns.heatmap(cm, annot=True, fmt="d", cmap="Blues", cbar=False, ax=ax,
                    xticklabels=labels, yticklabels=labels)
        ax.set(title=name, xlabel="predicted", ylabel="true")
    return save_figure(fig, path)


METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "accuracy": "accuracy",
                 "balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
                 "specificity": "specificity", "f1": "F1"}


@styled
def label_efficiency(df: pd.DataFrame, path: Path, metric: str = "roc_auc") -> Path:
    """Test metric against the fraction of labelled training women, one line per initialisation x protocol.

    ``df`` has ``init, protocol, label_fraction, seed, value`` (one row per seed's run). Each seed is a dot; the
    line joins the means over seeds and the bars are ± one standard deviation over seeds (the spread a rerun
    with other women and another data order would show). The x axis is logarithmic: each halving of the labels
    is the same step.
    """
    fig, ax = subplots(figsize=(6.2, 4.2))
    inits = [i for i in INITS if i in set(df["init"])] + sorted(set(df["init"]) - set(INITS))
    protocols = sorted(df["protocol"].unique())
    styles = {"full": ("-", "o"), "linear": ("--", "s")}
    n = len(inits) * len(protocols)
    for j, (init, protocol) in enumerate((i, p) for i in inits for p in protocols):
        d = df[(df["init"] == init) & (df["protocol"] == protocol)]
        if d.empty:
            continue
        stats = d.groupby("label_fraction")["value"].agg(["mean", "std", "count"]).sort_index()
        shift = 1.035 ** (j - (n - 1) / 2)  # small offsets keep overlapping points apart on the log axis
        ls, marker = styles.get(protocol, ("-.", "^"))
        ax.errorbar(stats.index.to_numpy(float) * shift, stats["mean"], yerr=np.nan_to_num(stats["std"]),
                    color=init_color(init), ls=ls, marker=marker, capsize=3, lw=1.6, ms=5,
                    label=f"{init}, {protocol} (n={int(stats['count'].max())} seeds)")
        ax.scatter(d["label_fraction"].to_numpy(float) * shift, d["value"], color=init_color(init), s=10,
                   alpha=0.45, lw=0)
    fractions = sorted(df["label_fraction"].unique())
    ax.set_xscale("log")
    ax.set_xticks(fractions, [f"{f:.0%}" for f in fractions])
    ax.minorticks_off()
    if metric in ("roc_auc", "balanced_accuracy"):
        ax.axhline(0.5, ls=":", c="grey", lw=1, label="chance")
    low = float(np.nanmin(df["value"])) if len(df) else 0.4
    ax.set(xlabel="labelled training women", ylabel=f"test {METRIC_LABELS.get(metric, metric)}",
           title="Label efficiency: mean ± SD over seeds (dots: seeds)", ylim=(min(0.4, low - 0.05), 1.01))
    ax.legend(fontsize=8, loc="lower right")
    return save_figure(fig, path)


@styled
def by_density(df: pd.DataFrame, path: Path, metrics: tuple[str, ...] = ("roc_auc", "sensitivity")) -> Path:
    """Headline metrics per breast-density category, one bar per initialisation, with 95% CIs.

    ``df`` has ``init, density, metric, value, low, high`` (one row per init, density and metric) and
    optionally ``n_test_patients``. A missing bar is a metric that is undefined there (one class only).
    """
    fig, axes = subplots(1, len(metrics), figsize=(5.0 * len(metrics), 3.6), squeeze=False)
    inits = list(dict.fromkeys(df["init"]))
    densities = sorted(df["density"].unique())
    width = 0.8 / max(len(inits), 1)
    palette = [init_color(i) for i in inits]
    for ax, metric in zip(axes.ravel(), metrics, strict=True):
        d = df[df["metric"] == metric]
        for i, init in enumerate(inits):
            part = d[d["init"] == init].set_index("density").reindex(densities)
            x = np.arange(len(densities)) + (i - (len(inits) - 1) / 2) * width
            y = part["value"].to_numpy(float)
            err = np.vstack([y - part["low"].to_numpy(float), part["high"].to_numpy(float) - y])
            ax.bar(x, np.nan_to_num(y), width, color=palette[i], label=init)
            ax.errorbar(x, np.nan_to_num(y), yerr=np.clip(np.nan_to_num(err), 0, None), fmt="none", c="k",
                        capsize=3, lw=1)
        n = df.groupby("density")["n_test_patients"].max() if "n_test_patients" in df else None
        ax.set_xticks(np.arange(len(densities)),
                      [f"{d}\n{int(n[d])} patient{'s' if n[d] != 1 else ''}" if n is not None and pd.notna(n[d])
                       else d for d in densities])
        ax.set(xlabel="breast density", ylabel=METRIC_LABELS.get(metric, metric), ylim=(0, 1.05),
               title=f"{METRIC_LABELS.get(metric, metric)} by density (test)")
    axes[0, -1].legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), title="init")
    return save_figure(fig, path)
