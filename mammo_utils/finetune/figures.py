"""Figures of stage 03: validation ROC AUC along each headline run.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import seaborn as sns

from mammo_utils.plots import (
    init_color,
    save_figure,
    styled,
    subplots,
)


@styled
def finetune_curves(history: pd.DataFrame, path: Path) -> Path:
    """Validation ROC AUC along training, one line per initialisation (``history``: init, step, val_auc)."""
    fig, ax = subplots(figsize=(5.5, 3.4))
    sns.lineplot(data=history, x="step", y="val_auc", hue="init", marker="o", ax=ax,
                 palette={i: init_color(i) for i in history["init"].unique()})
    ax.set(title="Fine-tuning: validation ROC AUC", xlabel="optimisation step", ylim=(0, 1.02))
    return save_figure(fig, path)
