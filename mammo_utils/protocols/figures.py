"""The study's two figures, drawn without pyplot (:mod:`mammo_utils.plots`).

- ``protocols.png``: one row per arm, accuracy and ROC AUC on the real labels and on the random ones, one marker
  per model · features (the first seed's 95% patient-bootstrap interval as a bar, the mean over seeds as the
  marker), the honest arms shaded, each arm's all-negative floor as a grey tick on the accuracy panels (A4 can
  never fall below it), chance and the paper's 96.7% claim as lines.
- ``fingerprint.png``: per arm, the distribution of each test item's cosine similarity to its nearest training
  item (1-NN's memory): a twin or an overlapping patch sits near 1, an honest test item where new women's images do.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns

from mammo_utils.plots import METRIC_LABELS, save_figure, styled, subplots
from mammo_utils.protocols.arms import Arm
from mammo_utils.protocols.table import column

MARKERS = "osD^vP*Xh<>"
PANELS = (("accuracy", "real"), ("accuracy", "random"), ("roc_auc", "real"), ("roc_auc", "random"))


@styled
def arms_figure(summary: dict, path: Path) -> Path:
    """One row per arm, four panels (accuracy and ROC AUC, real and random labels), a marker per model."""
    results = summary["results"]
    arms = list(dict.fromkeys(e["arm"] for e in results))
    models = list(dict.fromkeys(column(e) for e in results))
    palette = sns.color_palette("tab10", len(models))
    honest = {e["arm"] for e in results if e["honest"]}
    floors = {"films": summary["facts"]["all_negative_accuracy"],
              "patches": summary["facts"]["all_negative_accuracy_patches"]}
    family = {e["arm"]: e["family"] for e in results}
    fig, axes = subplots(1, len(PANELS), figsize=(16, 0.5 * len(arms) + 2.2), sharey=True, squeeze=False)
    for ax, (metric, label_set) in zip(axes[0], PANELS, strict=True):
        shown: set[str] = set()
        for i, arm in enumerate(arms):
            if arm in honest:
                ax.axhspan(i - 0.45, i + 0.45, color="#dff0d8", zorder=0)
            if metric == "accuracy":
                ax.plot([floors[family[arm]]] * 2, [i - 0.42, i + 0.42], color="dimgrey", lw=2.2, zorder=1,
                        label="all-negative floor" if i == 0 else None)
        for e in results:
            if e["labels"] != label_set:
                continue
            j = models.index(column(e))
            y = arms.index(e["arm"]) + (j - (len(models) - 1) / 2) * 0.8 / max(len(models), 1)
            mean, first = e["over_seeds"][metric]["mean"], e["first_seed"][metric]
            if not np.isfinite(mean):
                continue
            if np.isfinite(first["low"]):
                ax.plot([first["low"], first["high"]], [y, y], color=palette[j], lw=1.1, alpha=0.8)
            ax.plot([mean], [y], MARKERS[j % len(MARKERS)], color=palette[j], ms=5,
                    label=None if column(e) in shown else column(e))
            shown.add(column(e))
        if metric == "accuracy":
            claim = summary["paper_claim"]["accuracy"]
            ax.axvline(claim, ls="--", c="crimson", lw=1.3, label=f"paper's claim {claim:.1%} (no split stated)")
        ax.axvline(0.5, ls=":", c="grey", lw=1, label="chance (0.5)")
        name = METRIC_LABELS.get(metric, metric)
        ax.set(xlim=(0.2, 1.02), xlabel=name, title=f"{name}, {label_set} labels")
    axes[0, 0].set_yticks(range(len(arms)), [f"{a} (honest)" if a in honest else a for a in arms])
    axes[0, 0].invert_yaxis()
    unique: dict = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            unique.setdefault(label, handle)
    fig.legend(unique.values(), unique.keys(), fontsize=7, loc="lower center", ncol=min(6, len(unique)),
               bbox_to_anchor=(0.5, -0.01))
    fig.suptitle(f"{summary['dataset']} ({summary['profile']}): the same items under each protocol; marker: mean over "
                 f"{len(summary['seeds'])} seeds, bar: first seed's 95% patient-bootstrap interval", fontsize=10)
    fig.subplots_adjust(bottom=0.1 + 0.2 / max(1, len(arms) / 4))
    return save_figure(fig, path)


@styled
def fingerprint_figure(fingerprints: dict[str, dict[str, np.ndarray]], arms: list[Arm], path: Path) -> Path:
    """Per arm, the distribution of each test item's similarity to its nearest training item, per feature set."""
    data = pd.DataFrame([{"arm": a, "features": f, "similarity": float(v)} for a, per in fingerprints.items()
                         for f, values in per.items() for v in values])
    order = [a.name for a in arms if a.name in fingerprints]
    fig, ax = subplots(figsize=(8, 0.45 * max(len(order), 1) + 1.6))
    if len(data):
        sns.boxplot(data=data, x="similarity", y="arm", hue="features", order=order, ax=ax, fliersize=1.0,
                    linewidth=0.8)
        honest = {a.name for a in arms if a.honest}
        ax.set_yticks(range(len(order)), [f"{a} (honest)" if a in honest else a for a in order])
        ax.legend(fontsize=8, title="features", loc="lower left")
    ax.set(xlabel="cosine similarity of a test item to its nearest non-test item (standardised features)",
           ylabel="", title="Leakage fingerprint: a test item with a near-copy in training sits near 1")
    return save_figure(fig, path)
