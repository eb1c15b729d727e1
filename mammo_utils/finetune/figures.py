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


@styled
def budget_curve(table: pd.DataFrame, path: Path, title: str = "") -> Path:
    """Probe ROC AUC against pretraining steps, validation and test, all labels and a tenth of the women: the
    pretrained backbone's curve with its 95% band, step 0 its random initialisation, the baselines dashed."""
    splits = ("val", "test")
    fig, axes = subplots(1, 2, figsize=(12, 4.2), squeeze=False, sharey=True)
    baselines = table[table.step < 0]
    trained = table[table.step >= 0]
    for ax, split in zip(axes[0], splits, strict=True):
        for fraction, style in ((1.0, "o-"), (0.1, "s--")):
            d = trained[(trained.split == split) & (trained.label_fraction == fraction)].sort_values("step")
            if d.empty:
                continue
            name = d.init.iloc[0]
            label = f"{name}, {'all the labels' if fraction >= 1 else 'a tenth of the women'}"
            ax.plot(d.step, d.roc_auc, style, color=init_color(name), label=label, alpha=1 if fraction >= 1 else 0.7)
            ax.fill_between(d.step, d.ci_low, d.ci_high, color=init_color(name), alpha=0.12 if fraction >= 1 else 0.06)
        for name, b in baselines[(baselines.split == split) & (baselines.label_fraction == 1.0)].groupby("init"):
            ax.axhline(float(b.roc_auc.iloc[0]), ls=":", color=init_color(name), label=f"{name} (no network)")
        ax.axhline(0.5, ls="--", c="grey", lw=0.8)
        women = int(trained[trained.split == split].n_women.max()) if len(trained) else 0
        ax.set(title=f"{'validation' if split == 'val' else 'test'} women ({women})",
               xlabel="pretraining steps (0: random initialisation)", ylabel="probe ROC AUC, lesion vs normal crops")
        ax.set_xticks(sorted(trained.step.unique()))
    axes[0, 1].legend(fontsize=7, loc="lower right")
    if title:
        fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)
