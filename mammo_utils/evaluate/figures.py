"""Figures of stage 04: ROC curves with their bands, confusion matrices, label efficiency, by density.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import (
    METRIC_LABELS,
    init_color,
    save_figure,
    styled,
    subplots,
)


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


@styled
def label_efficiency(draws: pd.DataFrame, gain: list[dict], path: Path) -> Path:
    """The crop task's test ROC AUC against the fraction of labelled training women: one panel per classifier
    (linear probe, full fine-tuning), one line per initialisation (the mean over draws of labelled women, each draw
    a dot), the baselines dashed. Above the x axis, SimCLR − random with its paired 95% interval."""
    classifiers = [c for c in ("linear", "full") if c in set(draws.classifier)]
    fig, axes = subplots(1, len(classifiers), figsize=(6.2 * len(classifiers), 4.4), squeeze=False)
    baselines = {"pixels", "mean_sd", "mean", "sd"}
    for ax, classifier in zip(axes[0], classifiers, strict=True):
        d = draws[draws.classifier == classifier]
        for init, g in d.groupby("init", sort=False):
            means = g.groupby("label_fraction").roc_auc.mean()
            dashed = init in baselines
            ax.plot(means.index, means.values, "--" if dashed else "o-", color=init_color(init), label=init,
                    lw=1 if dashed else 2)
            if not dashed:
                ax.scatter(g.label_fraction, g.roc_auc, s=10, alpha=0.35, color=init_color(init))
        for row in (r for r in gain if r["classifier"] == classifier and r["task"].startswith("lesion")):
            if row.get("ci_low") is None:
                continue
            above = row["ci_low"] > 0
            ax.annotate(f"{row['difference']:+.3f}\n[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]",
                        (row["label_fraction"], 0.47), ha="center", va="bottom", fontsize=7,
                        color="C2" if above else "grey")
        ax.axhline(0.5, ls=":", c="grey")
        ax.set_xscale("log")
        ax.set_xticks(sorted(set(d.label_fraction)), [f"{f:.0%}" for f in sorted(set(d.label_fraction))])
        ax.set(title=f"{'linear probe' if classifier == 'linear' else 'full fine-tuning'}: lesion vs normal crops",
               xlabel="labelled training women", ylabel="test ROC AUC", ylim=(0.45, 1.0))
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
