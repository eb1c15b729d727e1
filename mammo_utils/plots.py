"""What every figure of the package shares: seaborn's style without touching the global one, one colour per
initialisation, metric names, and an atomic PNG writer. Each stage draws its own figures (``<stage>/figures.py``).

Figures are :class:`matplotlib.figure.Figure` objects drawn without pyplot, inside a seaborn style context
(:func:`styled`): importing this module changes neither matplotlib's backend nor a notebook's global style.
Every figure is written by :func:`save_figure` (atomically: a killed run leaves the old file or the new one).
"""

from __future__ import annotations

import functools
from pathlib import Path

import seaborn as sns
from matplotlib.figure import Figure

from mammo_utils.runs.files import atomic_write_bytes

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


# The colour of each initialisation in every figure; a name not listed here (a new method) gets one of the rest.
INIT_COLOURS = ("simclr", "moco", "random", "imagenet", "pixels", "mean_sd", "mean", "sd")


def init_color(init: str):
    """One colour per initialisation in every figure (colour-blind palette)."""
    palette = sns.color_palette("colorblind", 10)
    name = str(init).split(",")[0].strip()
    n = len(INIT_COLOURS)
    k = INIT_COLOURS.index(name) if name in INIT_COLOURS else n + sum(map(ord, name)) % (10 - n)
    return palette[k]


def label_name(abnormal: int, malignant: int) -> str:
    return "malignant" if malignant else "benign" if abnormal else "normal"


METRIC_LABELS = {"roc_auc": "ROC AUC", "pr_auc": "PR AUC", "accuracy": "accuracy",
                 "balanced_accuracy": "balanced accuracy", "sensitivity": "sensitivity",
                 "specificity": "specificity", "f1": "F1"}
