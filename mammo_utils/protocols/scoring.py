"""Scoring an arm: pooled out-of-fold metrics with patient-bootstrap intervals, the spread over seeds, and the
leakage fingerprint (how close each test item is to its nearest training item).

Every fold's test items are predicted by a model that did not train on them; the folds' test predictions are
pooled (each with its own fold's threshold) and scored once, and the 95% interval resamples **women**, all of
a resampled woman's items together (:func:`mammo_utils.evaluate.metrics.metrics_with_ci`), whatever the arm's unit of
split: a leaky arm's items are still correlated within a woman.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_utils.evaluate.metrics import metrics_with_ci

REPORTED = ("accuracy", "balanced_accuracy", "roc_auc")


def pooled_metrics(rows: pd.DataFrame, n_resamples: int, level: float, seed: int) -> dict[str, dict[str, float]]:
    """Every reported metric of pooled out-of-fold predictions (``label``, ``probability``, ``threshold`` per
    row, ``patient_id``) with its patient-bootstrap interval: ``{metric: {"value", "low", "high"}}``."""
    scored = metrics_with_ci(rows, None, n_resamples, level, seed)
    return {m: scored[m] for m in REPORTED}


def over_seeds(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, range and mean interval bounds of each metric over the seeds' runs."""
    out = {}
    for m in REPORTED:
        v = np.array([s[m]["value"] for s in per_seed], dtype=float)
        lo = np.array([s[m]["low"] for s in per_seed], dtype=float)
        hi = np.array([s[m]["high"] for s in per_seed], dtype=float)
        ok = np.isfinite(v)
        out[m] = {"mean": float(v[ok].mean()) if ok.any() else float("nan"),
                  "sd": float(v[ok].std(ddof=1)) if ok.sum() > 1 else float("nan"),
                  "min": float(v[ok].min()) if ok.any() else float("nan"),
                  "max": float(v[ok].max()) if ok.any() else float("nan"),
                  "low": float(np.nanmean(lo)) if np.isfinite(lo).any() else float("nan"),
                  "high": float(np.nanmean(hi)) if np.isfinite(hi).any() else float("nan"),
                  "n_seeds": int(ok.sum())}
    return out


def nearest_train_similarity(train_x: np.ndarray, test_x: np.ndarray, chunk: int = 1024) -> np.ndarray:
    """Each test item's cosine similarity to its nearest training item (features already standardised with the
    training statistics, so the similarity measures more than the shared positive offset of ReLU features).

    A twin, or a patch that overlaps a training patch, sits at a similarity near 1; an honest test item sits
    where new images of new women do.
    """
    def unit(x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    tr = unit(train_x)
    te = unit(test_x)
    return np.concatenate([(te[i : i + chunk] @ tr.T).max(axis=1) for i in range(0, len(te), chunk)]) if len(te) \
        else np.zeros(0)


def fingerprint_summary(similarity: np.ndarray) -> dict[str, float]:
    """Quartiles of a fingerprint and the share of test items nearly identical to a training item (> 0.95)."""
    s = np.asarray(similarity, dtype=float)
    if not len(s):
        return {}
    q = np.quantile(s, [0.25, 0.5, 0.75])
    return {"q25": float(q[0]), "median": float(q[1]), "q75": float(q[2]), "share_above_0.95": float((s > 0.95).mean()),
            "n": int(len(s))}
