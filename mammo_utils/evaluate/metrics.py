"""Point estimates (scikit-learn) and patient-level bootstrap confidence intervals.

Images of one woman are correlated, so intervals resample patients, not images (all of a resampled
patient's images come along). The decision threshold is chosen on the validation split, never on test.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy.stats import rankdata
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


def auc_or_half(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC, or 0.5 (chance) when ``y`` holds one class only (a tiny validation split can): the model-selection
    score of fine-tuning, which must always be a number.

    Computed as the Mann-Whitney statistic from scipy's mid-ranks, U / (n+ n-), which is the ROC AUC with ties
    counted half (the value ``roc_auc_score`` returns, checked in the tests): it is scored after every step of
    every linear probe, and there scikit-learn's input checks cost 20 times the computation (on the MIAS crop
    task, 7 of its 29 minutes).
    """
    return float(aucs_or_half(y, np.asarray(score).ravel()[None])[0])


def aucs_or_half(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """:func:`auc_or_half` of every row of ``scores`` (K, N) against the same labels ``y`` (N,): the K linear probes
    trained side by side score their validation crops in one call."""
    y = np.asarray(y).astype(bool).ravel()
    scores = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return np.full(len(scores), 0.5)
    ranks = rankdata(scores, axis=1)
    return (ranks[:, y].sum(1) - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def choose_threshold(y: np.ndarray, p: np.ndarray) -> float:
    """The threshold maximising Youden's J (sensitivity + specificity - 1) on the given (validation) data."""
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return 0.5
    fpr, tpr, thr = roc_curve(y, p)
    j = tpr - fpr
    best = int(np.argmax(j[1:])) + 1  # thr[0] is +inf
    return float(min(thr[best], 1.0))


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float | np.ndarray = 0.5) -> dict[str, float]:
    """Every metric of :data:`METRICS` for labels ``y`` (0/1) and probabilities ``p``; NaN when undefined.

    ``threshold`` is one number, or one per row (cross-validation: each fold's own validation threshold).
    """
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


def patient_draws(patient_ids: pd.Series | np.ndarray, n_resamples: int, seed: int = 0):
    """The bootstrap's one source of randomness: per resample, the patients drawn with replacement (as codes
    into the table's distinct patients), as many as there are patients. Yields ``(codes, draw)`` where
    ``codes`` maps each row to its patient and ``draw`` is one resample's (n_patients,) drawn codes.

    Every interval of the package resamples through this function: the rows of a resample
    (:func:`resampled_rows`, for any statistic), or their weights (:func:`patient_resample_weights`, for the
    vectorised metrics), so the same seed gives the same resamples everywhere.
    """
    codes, uniques = pd.factorize(pd.Series(np.asarray(patient_ids)).astype(str))
    rng = np.random.default_rng(seed)
    for _ in range(n_resamples):
        yield codes, rng.integers(0, len(uniques), size=len(uniques))


def resampled_rows(patient_ids: pd.Series | np.ndarray, n_resamples: int, seed: int = 0):
    """Yield the row indices of each patient-level resample: every row of every drawn patient, a patient drawn
    twice contributing its rows twice."""
    rows_of: list[np.ndarray] | None = None
    for codes, draw in patient_draws(patient_ids, n_resamples, seed):
        if rows_of is None:
            rows_of = [np.flatnonzero(codes == k) for k in range(codes.max() + 1)] if len(codes) else []
        yield np.concatenate([rows_of[k] for k in draw]) if len(draw) else np.zeros(0, dtype=int)


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
    samples: dict[str, list[float]] = {}
    for idx in resampled_rows(df[group], n_resamples, seed):
        for name, value in statistic(df.iloc[idx]).items():
            samples.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    out = {}
    for name, values in samples.items():
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        out[name] = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (np.nan, np.nan)
    return out


def weighted_roc_auc(y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of scores ``p`` for labels ``y`` under each row weighting of ``w`` (R, n): (R,) values, NaN where a
    weighting keeps one class only. Equal to scikit-learn's on the resampled rows, ties included (Mann-Whitney:
    P(score of a positive > score of a negative) + half the ties)."""
    y, w = np.asarray(y).astype(bool), np.asarray(w, dtype=float)
    order = np.argsort(np.asarray(p, dtype=float), kind="stable")
    ps, ys, ws = np.asarray(p, dtype=float)[order], y[order], w[:, order]
    starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])  # scores grouped into distinct values
    pos_g, neg_g = np.add.reduceat(ws * ys, starts, axis=1), np.add.reduceat(ws * ~ys, starts, axis=1)
    pos, neg = pos_g.sum(axis=1), neg_g.sum(axis=1)
    neg_below = np.cumsum(neg_g, axis=1) - neg_g
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (pos_g * (neg_below + 0.5 * neg_g)).sum(axis=1) / (pos * neg)
    return np.where((pos > 0) & (neg > 0), auc, np.nan)


def weighted_metrics(y: np.ndarray, p: np.ndarray, pred: np.ndarray, w: np.ndarray) -> dict[str, np.ndarray]:
    """:func:`binary_metrics` for many weightings of the same rows at once (the bootstrap's inner loop).

    A bootstrap resample that draws a patient ``c`` times is the table with that patient's rows weighted ``c``:
    every metric here, tied scores included, equals scikit-learn's on the resampled rows.

    Args:
        y: (n,) labels 0/1. p: (n,) scores. pred: (n,) decisions 0/1 at the chosen threshold.
        w: (R, n) non-negative row weights, one weighting per row of the result.

    Returns:
        ``{metric: (R,) values}``; NaN where the metric is undefined (one class only).
    """
    y, pred = np.asarray(y).astype(bool), np.asarray(pred).astype(bool)
    w = np.asarray(w, dtype=float)
    tp, fn = w @ (y & pred), w @ (y & ~pred)
    fp, tn = w @ (~y & pred), w @ (~y & ~pred)
    pos, neg = tp + fn, fp + tn
    both = (pos > 0) & (neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        sens = np.where(pos > 0, tp / pos, np.nan)
        spec = np.where(neg > 0, tn / neg, np.nan)
        f1_den = 2 * tp + fp + fn
        out = {
            "accuracy": (tp + tn) / (pos + neg),
            "balanced_accuracy": np.where(both, (sens + spec) / 2, np.nan),
            "sensitivity": sens,
            "specificity": spec,
            "f1": np.where(f1_den > 0, 2 * tp / np.where(f1_den > 0, f1_den, 1), 0.0),
        }
        # Scores grouped into distinct values (ties share a group), ascending.
        order = np.argsort(np.asarray(p, dtype=float), kind="stable")
        ps, ys, ws = np.asarray(p, dtype=float)[order], y[order], w[:, order]
        starts = np.flatnonzero(np.r_[True, ps[1:] != ps[:-1]])
        pos_g = np.add.reduceat(ws * ys, starts, axis=1)
        neg_g = np.add.reduceat(ws * ~ys, starts, axis=1)
        # Average precision as scikit-learn defines it: sum over thresholds (descending) of recall gain x precision.
        tps, fps = np.cumsum(pos_g[:, ::-1], axis=1), np.cumsum(neg_g[:, ::-1], axis=1)
        precision = np.where(tps + fps > 0, tps / np.where(tps + fps > 0, tps + fps, 1), 0.0)
        ap = (pos_g[:, ::-1] * precision).sum(axis=1) / pos
    out["roc_auc"] = weighted_roc_auc(y, p, w)
    out["pr_auc"] = np.where(both, ap, np.nan)
    return out


def patient_resample_weights(patient_ids: pd.Series | np.ndarray, n_resamples: int, seed: int = 0):
    """Yield (R, n) row weights of patient-level bootstrap resamples, in chunks (memory stays small).

    The draws are :func:`patient_draws`' (those of :func:`bootstrap_ci` for the same seed), so both give the same
    intervals.
    """
    n_rows = len(patient_ids)
    chunk = max(1, min(n_resamples, 2_000_000 // max(n_rows, 1)))
    counts, codes = [], None
    for codes, draw in patient_draws(patient_ids, n_resamples, seed):
        counts.append(np.bincount(draw, minlength=codes.max() + 1 if n_rows else 0))
        if len(counts) == chunk:
            yield np.stack(counts)[:, codes].astype(float)
            counts = []
    if counts:
        yield np.stack(counts)[:, codes].astype(float)


def metrics_with_ci(
    df: pd.DataFrame, threshold: float | None, n_resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> dict[str, dict[str, float]]:
    """``{metric: {"value", "low", "high"}}`` for a predictions table (``label``, ``probability``, ``patient_id``).

    Point estimates come from scikit-learn (:func:`binary_metrics`); the percentile intervals resample patients
    (:func:`weighted_metrics`, vectorised: a thousand resamples of a test set take well under a second).

    Args:
        df: one row per image.
        threshold: the decision threshold, or None to use the table's ``threshold`` column (one per row).
        n_resamples: bootstrap resamples (≥ 1,000 for reported numbers).
        level: coverage of the intervals.
        seed: random seed of the resampling.
    """
    thr = df["threshold"].to_numpy(dtype=float) if threshold is None else threshold
    y, p = df["label"].to_numpy().astype(int), df["probability"].to_numpy(dtype=float)
    point = binary_metrics(y, p, thr)
    pred = (p >= thr).astype(int)
    samples: dict[str, list[np.ndarray]] = {k: [] for k in METRICS}
    for w in patient_resample_weights(df["patient_id"], n_resamples, seed):
        for k, v in weighted_metrics(y, p, pred, w).items():
            samples[k].append(v)
    alpha = (1 - level) / 2
    out = {}
    for k in METRICS:
        # Rounded to 12 decimals, point and resamples alike: scikit-learn and the weighted formulas may differ in
        # the last bit, and a resample identical to the data must give exactly the point estimate.
        v = np.round(np.concatenate(samples[k]), 12) if samples[k] else np.zeros(0)
        v = v[np.isfinite(v)]
        low, high = (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha))) if len(v) else (np.nan, np.nan)
        out[k] = {"value": float(np.round(point[k], 12)), "low": low, "high": high}
    return out


def roc_band(
    df: pd.DataFrame, n_resamples: int = 200, level: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pointwise patient-bootstrap band of the ROC curve on a grid of false-positive rates."""
    grid = np.linspace(0, 1, 101)
    y, p = df["label"].to_numpy(), df["probability"].to_numpy()
    curves = []
    for idx in resampled_rows(df["patient_id"], n_resamples, seed):
        if len(np.unique(y[idx])) < 2:
            continue
        fpr, tpr, _ = roc_curve(y[idx], p[idx])
        curves.append(np.interp(grid, fpr, tpr))
    if not curves:
        return grid, grid, grid
    c = np.array(curves)
    alpha = (1 - level) / 2
    return grid, np.quantile(c, alpha, axis=0), np.quantile(c, 1 - alpha, axis=0)
