"""What self-supervised pretraining adds: the crop task's classifiers from SimCLR against random initialisation and
the baselines, at each fraction of labelled women, with paired patient-bootstrap intervals (``ssl_gain.json``).

A point (classifier, label fraction) pools the test predictions of every split (each woman tested once in
cross-validation) per draw of labelled women; its ROC AUC is the mean over the draws, the AUC one should expect from
a classifier trained on that fraction of the women. The difference SimCLR − random is paired: the same test crops,
the same draws of labelled women, and each bootstrap resample of test women (:func:`~mammo_utils.evaluate.metrics.
patient_resample_weights`) scores both, so the interval is that of the difference itself, not of two overlapping
intervals. The same is done for whole films read by the fully fine-tuned crop classifiers (their highest crop).
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from mammo_utils.evaluate.metrics import patient_resample_weights, weighted_roc_auc

GAIN_KEYS = ("dataset", "task", "classifier", "label_fraction", "simclr", "random", "difference", "ci_low",
             "ci_high", "n_test_women")
BASELINES = {"pixels": "the crop's pixels", "mean_sd": "its mean and SD", "mean": "its mean", "sd": "its SD"}


def score_matrix(rows: pd.DataFrame, init: str, order: pd.Index) -> np.ndarray:
    """(n_items, n_draws) test scores of ``init``, items in ``order`` (one column per draw of labelled women)."""
    mine = rows[rows["init"] == init]
    table = mine.pivot_table(index="item_id", columns="draw", values="probability", aggfunc="first")
    return table.reindex(order).to_numpy(dtype=float)


def mean_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The mean over draws (columns of ``scores``) of each weighting's ROC AUC: (R,) for (R, n) ``weights`` (NaN
    where a resample keeps one class only)."""
    aucs = np.stack([weighted_roc_auc(y, scores[:, d], weights) for d in range(scores.shape[1])])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a resample of one class: NaN, left out of the interval
        return np.nanmean(aucs, axis=0)


def paired_gain(rows: pd.DataFrame, a: str, b: str, others: list[str], n_resamples: int, level: float,
                seed: int) -> dict:
    """Mean ROC AUC of ``a``, ``b`` and each of ``others`` on the test rows, and the patient-bootstrap interval of
    ``a`` − ``b`` (the same resamples of women for both).

    Args:
        rows: test predictions of one point, ``item_id, patient_id, label, init, draw, probability``.
        a, b: the two initialisations compared (SimCLR, random). others: baselines to score beside them.
        n_resamples, level, seed: the bootstrap's.
    """
    items = rows.drop_duplicates("item_id").set_index("item_id")
    order = items.index
    y, patients = items.label.to_numpy().astype(int), items.patient_id.astype(str).to_numpy()
    one = np.ones((1, len(order)))
    matrices = {name: score_matrix(rows, name, order) for name in [a, b, *others] if (rows["init"] == name).any()}
    point = {name: float(mean_auc(y, m, one)[0]) for name, m in matrices.items()}
    out = {**point, "n_test_women": int(len(set(patients))), "n_test_items": int(len(order)),
           "n_draws": int(matrices[a].shape[1]) if a in matrices else 0}
    if a in matrices and b in matrices:
        diffs = np.concatenate([mean_auc(y, matrices[a], w) - mean_auc(y, matrices[b], w)
                                for w in patient_resample_weights(patients, n_resamples, seed)])
        diffs = diffs[np.isfinite(diffs)]
        alpha = (1 - level) / 2
        out.update(difference=point[a] - point[b], ci_low=float(np.quantile(diffs, alpha)),
                   ci_high=float(np.quantile(diffs, 1 - alpha)),
                   share_of_draws_a_ahead=float(np.mean([
                       weighted_roc_auc(y, matrices[a][:, d], one)[0] > weighted_roc_auc(y, matrices[b][:, d], one)[0]
                       for d in range(min(matrices[a].shape[1], matrices[b].shape[1]))])))
    return out


def gain_table(crops: pd.DataFrame, films: pd.DataFrame, dataset: str, ssl: str, n_resamples: int, level: float,
               seed: int) -> list[dict]:
    """The rows of ``ssl_gain.json``: one per (classifier, label fraction) of the crop task, then the whole films
    read by the crop classifiers. Each row has :data:`GAIN_KEYS` (``simclr`` is the self-supervised method's AUC,
    whichever it is: ``method`` names it) and the baselines' AUCs where they were trained."""
    out = []
    test = crops[crops.split == "test"].rename(columns={"crop_id": "item_id"})
    for (classifier, fraction), rows in test.groupby(["classifier", "label_fraction"], sort=True):
        others = [name for name in BASELINES if classifier == "linear"] + ["imagenet"]
        g = paired_gain(rows, ssl, "random", others, n_resamples, level, seed)
        out.append(_row(g, dataset, "lesion crop vs normal-film crop", classifier, fraction, ssl))
    test = films[films.split == "test"].rename(columns={"image_id": "item_id"}).assign(draw=0)
    for (classifier, fraction), rows in test.groupby(["classifier", "label_fraction"], sort=True):
        g = paired_gain(rows, ssl, "random", ["imagenet"], n_resamples, level, seed)
        out.append(_row(g, dataset, "abnormal film (its highest crop)", classifier, fraction, ssl))
    return out


def _row(g: dict, dataset: str, task: str, classifier: str, fraction: float, ssl: str) -> dict:
    row = {"dataset": dataset, "task": task, "classifier": classifier, "label_fraction": float(fraction),
           "method": ssl, "simclr": g.get(ssl), "random": g.get("random")}
    row.update({k: g.get(k) for k in ("difference", "ci_low", "ci_high", "n_test_women", "n_test_items", "n_draws",
                                      "share_of_draws_a_ahead")})
    row.update({name: g[name] for name in (*BASELINES, "imagenet") if name in g})
    best = best_baseline(row)
    row.update(best_baseline=best[0] if best else None, best_baseline_auc=best[1] if best else None)
    return row


def draw_aucs(test: pd.DataFrame) -> pd.DataFrame:
    """The test ROC AUC of every (init, classifier, label fraction, draw) of the crop task, the splits pooled: the
    points of the label-efficiency figure."""
    from sklearn.metrics import roc_auc_score

    rows = []
    for (init, classifier, fraction, draw), g in test.groupby(["init", "classifier", "label_fraction", "draw"]):
        if g.label.nunique() == 2:
            rows.append({"init": init, "classifier": classifier, "label_fraction": float(fraction), "draw": int(draw),
                         "roc_auc": float(roc_auc_score(g.label, g.probability))})
    return pd.DataFrame(rows, columns=["init", "classifier", "label_fraction", "draw", "roc_auc"])


def best_baseline(row: dict) -> tuple[str, float] | None:
    """The strongest of the baselines a row holds, as ``(name, AUC)`` (None without baselines)."""
    have = {name: row[name] for name in BASELINES if row.get(name) is not None}
    return max(have.items(), key=lambda kv: kv[1]) if have else None
