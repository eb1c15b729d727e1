"""The study's two figures, drawn without pyplot (:mod:`mammo_utils.plots`).

- ``protocols.png``: one row per arm (and per model), the metric with its interval for each initialisation,
  each seed a dot, the honest arms shaded, the paper's 96.7% claim as a line on the accuracy panel.
- ``fingerprint.png``: per arm, the distribution of each test item's cosine similarity to its nearest training
  item: a twin or an overlapping patch sits near 1, an honest test item where new women's images do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import METRIC_LABELS, init_color, save_figure, styled, subplots
from mammo_utils.protocols.arms import Arm
from mammo_utils.protocols.scoring import REPORTED


def _row_label(entry: dict) -> str:
    return entry["arm"] + (" · CNN" if entry["model"] == "cnn" else "")


@styled
def arms_figure(summary: dict, path: Path) -> Path:
    """One row per arm (and model), one panel per metric: the value and 95% interval of each init."""
    results = summary["results"]
    labels = list(dict.fromkeys(_row_label(e) for e in results))
    inits = list(dict.fromkeys(e["init"] for e in results))
    honest = {_row_label(e) for e in results if e["honest"]}
    fig, axes = subplots(1, len(REPORTED), figsize=(13, 0.42 * len(labels) + 1.8), sharey=True, squeeze=False)
    y_of = {label: i for i, label in enumerate(labels)}
    for ax, metric in zip(axes[0], REPORTED, strict=True):
        shown: set[str] = set()
        for label in honest:
            ax.axhspan(y_of[label] - 0.45, y_of[label] + 0.45, color="#dff0d8", zorder=0)
        for e in results:
            j = inits.index(e["init"])
            y = y_of[_row_label(e)] + (j - (len(inits) - 1) / 2) * 0.28
            point = e["pooled"][metric] if "pooled" in e else {**e["over_seeds"][metric],
                                                               "value": e["over_seeds"][metric]["mean"]}
            if not np.isfinite(point["value"]):
                continue
            lo, hi = point["low"], point["high"]
            ax.errorbar([point["value"]], [y], xerr=[[max(0, point["value"] - lo)], [max(0, hi - point["value"])]],
                        fmt="o", color=init_color(e["init"]), capsize=3, ms=5, lw=1.4,
                        label=None if e["init"] in shown else f"{e['init']} init")
            shown.add(e["init"])
            seeds = [s["metrics"][metric]["value"] for s in e["seeds"]]
            ax.scatter(seeds, [y] * len(seeds), s=9, color=init_color(e["init"]), alpha=0.5, lw=0)
        if metric == "accuracy":
            claim = summary["paper_claim"]["accuracy"]
            ax.axvline(claim, ls="--", c="crimson", lw=1.3, label=f"paper's claim {claim:.1%} (no split stated)")
        else:
            ax.axvline(0.5, ls=":", c="grey", lw=1, label="chance")
        ax.set(xlim=(0.2, 1.02), xlabel=METRIC_LABELS.get(metric, metric), title=METRIC_LABELS.get(metric, metric))
    axes[0, 0].set_yticks(range(len(labels)), [f"{lb} (honest)" if lb in honest else lb for lb in labels])
    axes[0, 0].invert_yaxis()
    axes[0, 0].legend(fontsize=7, loc="lower left")
    axes[0, -1].legend(fontsize=7, loc="lower right")
    fig.suptitle(f"{summary['dataset']} ({summary['profile']}): the same films under each protocol; mean over "
                 f"{len(summary['seeds'])} seeds with the 95% patient-bootstrap interval (dots: seeds)", fontsize=10)
    return save_figure(fig, path)


@styled
def fingerprint_figure(fingerprints: dict[str, dict[str, np.ndarray]], arms: list[Arm], path: Path) -> Path:
    """Per arm, the distribution of each test item's similarity to its nearest training item, per init."""
    data = pd.DataFrame([{"arm": a, "init": i, "similarity": float(v)} for a, per in fingerprints.items()
                         for i, values in per.items() for v in values])
    order = [a.name for a in arms if a.name in fingerprints]
    fig, ax = subplots(figsize=(8, 0.45 * max(len(order), 1) + 1.6))
    if len(data):
        inits = list(dict.fromkeys(data["init"]))
        sns.boxplot(data=data, x="similarity", y="arm", hue="init", order=order, ax=ax, fliersize=1.5,
                    palette={i: init_color(i) for i in inits}, linewidth=0.8)
        honest = {a.name for a in arms if a.honest}
        ax.set_yticks(range(len(order)), [f"{a} (honest)" if a in honest else a for a in order])
        ax.legend(fontsize=8, title="features", loc="lower left")
    ax.set(xlabel="cosine similarity of a test item to its nearest training item (standardised features)",
           ylabel="", title="Leakage fingerprint: a test item with a near-copy in training sits near 1")
    return save_figure(fig, path)
