"""Figures of stage 04: ROC curves with their bands, confusion matrices, label efficiency, by density.

Drawn with the shared helpers of :mod:`mammo_utils.plots` (no pyplot, no global style)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import (
    INIT_COLOURS,
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
def label_efficiency(df: pd.DataFrame, path: Path, metric: str = "roc_auc") -> Path:
    """Test metric against the fraction of labelled training women, one line per initialisation x protocol.

    ``df`` has ``init, protocol, label_fraction, seed, value`` (one row per seed's run). Each seed is a dot; the
    line joins the means over seeds and the bars are ± one standard deviation over seeds (the spread a rerun
    with other women and another data order would show). The x axis is logarithmic: each halving of the labels
    is the same step.
    """
    fig, ax = subplots(figsize=(6.2, 4.2))
    inits = [i for i in INIT_COLOURS if i in set(df["init"])] + sorted(set(df["init"]) - set(INIT_COLOURS))
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
