"""Point estimates (scikit-learn) and patient-level bootstrap confidence intervals.

Images of one woman are correlated, so intervals resample patients, not images (all of a resampled
patient's images come along). The decision threshold is chosen on the validation split, never on test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    roc_auc_score,
    roc_curve,
)

METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "pr_auc", "sensitivity", "specificity", "f1")


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising Youden's J (sensitivity + specificity - 1) on the given (validation) data."""
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # thr[0] is +inf
    return float(min(thr[best], 1.0))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every metric of :data:`METRICS` for labels ``y`` (0/1) and probabilities ``p``; NaN when undefined."""
    y = np.asarray(y).astype(int)
    p = np.asarray(p, dtype=float)
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if both else float("nan"),
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else float("nan"),
        "specificity": float(tn / (tn + fp)) if tn + fp else float("nan"),
        "f1": float(f1_score(y, pred, zero_division=0)),
    }


def bootstrap_ci(
    df: pd.DataFrame,
    statistic: Callable[[pd.DataFrame], dict[str, float]],
    n_resamples: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    group: str = "patient_id",
) -> dict[str, tuple[float, float]]:
    """Percentile bootstrap CIs of each value returned by ``statistic``, resampling ``group`` (patients).

    Args:
        df: one row per image with a ``group`` column.
        statistic: maps a table to ``{name: value}``.
        n_resamples: bootstrap resamples (≥ 1,000 for reported numbers).
        level: coverage of the interval.
        seed: random seed.
        group: the resampling unit.

    Returns:
        ``{name: (low, high)}``; resamples where a value is undefined (NaN) are left out for that value.
    """
    rng = np.random.default_rng(seed)
    groups = df[group].astype(str).to_numpy()
    codes, uniques = pd.factorize(groups)
    rows_of = [np.flatnonzero(codes == k) for k in range(len(uniques))]
    samples: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(uniques), size=len(uniques))
        idx = np.concatenate([rows_of[k] for k in pick])
        for name, value in statistic(df.iloc[idx]).items():
            samples.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    out = {}
    for name, values in samples.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        out[name] = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (np.nan, np.nan)
    return out


def metrics_with_ci(
    df: pd.DataFrame, threshold: float, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "low", "high"}}`` for a predictions table (``label``, ``probability``, ``patient_id``)."""
    point = binary_metrics(df["label"], df["probability"], threshold)
    ci = bootstrap_ci(df, lambda d: binary_metrics(d["label"], d["probability"], threshold), n_resamples, level, seed)
    return {k: {"value": point[k], "low": ci[k][0], "high": ci[k][1]} for k in METRICS}


def roc_band(
    df: pd.DataFrame, n_resamples: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise patient-bootstrap band of the ROC curve on a grid of false-positive rates."""
    grid = np.linspace(0, 1, 101)
    rng = np.random.default_rng(seed)
    codes, uniques = pd.factorize(df["patient_id"].astype(str))
    rows_of = [np.flatnonzero(codes == k) for k in range(len(uniques))]
    y, p = df["label"].to_numpy(), df["probability"].to_numpy()
    curves = []
    for _ in range(n_resamples):
        idx = np.concatenate([rows_of[k] for k in rng.integers(0, len(uniques), size=len(uniques))])
        if len(np.unique(y[idx])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return grid, grid, grid
    c = np.array(curves)
    alpha = (1 - level) / 2
    return grid, np.quantile(c, alpha, axis=0), np.quantile(c, 1 - alpha, axis=0)
