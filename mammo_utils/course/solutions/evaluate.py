"""Reference solutions of notebook 04 (evaluation)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd


def my_sensitivity_specificity_balanced_accuracy(y, p, threshold: float) -> tuple[float, float, float]:
    """Sensitivity, specificity and balanced accuracy of the decisions ``p >= threshold`` against labels ``y``
    (0/1); NaN where a value is undefined (no positive, or no negative, image)."""
    y, decision = np.asarray(y).astype(int), np.asarray(p, dtype=float) >= threshold
    tp, fn = np.sum(decision & (y == 1)), np.sum(~decision & (y == 1))
    tn, fp = np.sum(~decision & (y == 0)), np.sum(decision & (y == 0))
    sensitivity = tp / (tp + fn) if tp + fn else float("nan")
    specificity = tn / (tn + fp) if tn + fp else float("nan")
    return float(sensitivity), float(specificity), float((sensitivity + specificity) / 2)


def my_youden_threshold(y_val, p_val) -> float:
    """The threshold among the validation scores that maximises Youden's J = sensitivity + specificity - 1 (the
    highest such threshold on a tie); 0.5 when ``y_val`` holds one class only."""
    y, p = np.asarray(y_val).astype(int), np.asarray(p_val, dtype=float)
    if len(np.unique(y)) < 2:
        return 0.5
    best_j, best_t = -np.inf, 0.5
    for t in np.unique(p)[::-1]:  # highest first, so a tie keeps the highest threshold
        decision = p >= t
        j = decision[y == 1].mean() - decision[y == 0].mean()  # sensitivity - (1 - specificity)
        if j > best_j:
            best_j, best_t = j, float(t)
    return best_t


def my_patient_bootstrap_ci(df: pd.DataFrame, metric: Callable[[pd.DataFrame], float], n_resamples: int = 1000,
                            seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of ``metric(table)`` over bootstrap resamples of the women (``patient_id``): each
    resample draws as many women as there are, with replacement, and takes all the rows of each woman drawn.
    Resamples where the metric is NaN (undefined) are left out."""
    rng = np.random.default_rng(seed)
    rows_of = list(df.groupby("patient_id").indices.values())  # each woman's row positions
    values = []
    for _ in range(n_resamples):
        drawn = rng.integers(0, len(rows_of), size=len(rows_of))  # women, with replacement
        values.append(metric(df.iloc[np.concatenate([rows_of[k] for k in drawn])]))
    values = np.asarray(values, dtype=float)
    low, high = np.quantile(values[np.isfinite(values)], [0.025, 0.975])
    return float(low), float(high)


def my_copy_sibling_accuracy(films: pd.DataFrame) -> float | None:
    """Accuracy of copying each film's label from the woman's other films: the other view(s) of the same breast
    where there are any, else all her other films (their majority; a tie says positive). ``films`` has one row per
    film with ``patient_id``, ``laterality`` and ``label``. None when no film has a sibling."""
    hits = []
    for _, woman in films.groupby("patient_id"):
        for i, film in woman.iterrows():
            others = woman.drop(index=i)
            if others.empty:
                continue
            same_breast = others[others.laterality == film.laterality]
            copied_from = same_breast if len(same_breast) else others
            copied_label = int(copied_from.label.mean() >= 0.5)
            hits.append(copied_label == film.label)
    return float(np.mean(hits)) if hits else None
