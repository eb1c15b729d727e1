"""The frozen-feature classifier of the study: scikit-learn's logistic regression, C fixed in advance, and how
its "epoch", seed and threshold are chosen, honestly (on validation) or not (on test).

The model is ``LogisticRegression(C=C, class_weight="balanced")`` (lbfgs) on features standardised with the
training items' mean and spread. C is fixed before any result is seen (``protocols.logistic_c``); what a
protocol may choose is what a network's training run has too:

- the **epoch**: the regression is stopped after each of ``protocols.lr_iterations`` lbfgs iterations (each one
  full pass over the training features), the analogue of a network's epochs;
- the **seed**: the starting weights, drawn small and at random (an early-stopped solution depends on them);
- the **threshold** on the predicted probability.

An honest arm chooses the epoch by validation ROC AUC and the threshold by Youden's J on validation
(:func:`choose_on_validation`); A4 and A5 choose epoch, seed and threshold by test accuracy over N
configurations (:func:`choose_on_test`), the "best result on the test set" of a paper that reports one.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from mammo_utils.evaluate.metrics import choose_threshold


def standardise(train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """``train`` and ``others`` minus the training mean, over the training standard deviation (per feature)."""
    mean, std = train.mean(0), train.std(0)
    std = np.where(std > 1e-6, std, 1.0)
    return [((x - mean) / std).astype(np.float32) for x in (train, *others)]


def logistic_path(train_x: np.ndarray, train_y: np.ndarray, evals: dict[str, np.ndarray], c: float,
                  iterations: tuple[int, ...], seed: int, init_scale: float = 0.01) -> dict[int, dict[str, np.ndarray]]:
    """Train a class-balanced logistic regression from random starting weights and predict after each number of
    iterations.

    Args:
        train_x: (n, d) standardised features. train_y: (n,) labels 0/1 (both present).
        evals: named (m, d) feature sets to predict at each stop. c: the inverse regularisation strength.
        iterations: increasing cumulative iteration counts to stop at. seed: the starting weights' draw.
        init_scale: their standard deviation.

    Returns:
        ``{iterations: {name: (m,) probability of the positive class}}``.
    """
    rng = np.random.default_rng(seed)
    model = LogisticRegression(C=c, class_weight="balanced", warm_start=True, max_iter=1)
    model.coef_ = rng.normal(scale=init_scale, size=(1, train_x.shape[1]))
    model.intercept_ = np.zeros(1)
    out, done = {}, 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # stopping early is the point
        for n in iterations:
            model.max_iter = max(1, n - done)
            model.fit(train_x, train_y)
            done = n
            out[n] = {name: model.predict_proba(x)[:, 1] for name, x in evals.items()}
    return out


@dataclass(frozen=True)
class Choice:
    """What a protocol chose: the epoch (iterations), the seed, the threshold, and on what."""

    iterations: int
    seed: int
    threshold: float
    chosen_on: str  # "validation" or "test"
    n_configurations: int


def rank_auc(y: np.ndarray, score: np.ndarray) -> float:
    """ROC AUC as the Mann-Whitney statistic (ties count a half), 0.5 with one class: scikit-learn's value without
    its input checks, for the thousands of validation choices the study makes."""
    from scipy.stats import rankdata

    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if not n_pos or not n_neg:
        return 0.5
    ranks = rankdata(np.asarray(score, dtype=float))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def choose_on_validation(path: dict[int, dict[str, np.ndarray]], val_y: np.ndarray, seed: int) -> Choice:
    """The honest choice: the epoch with the best validation ROC AUC (ties: the earlier), then the threshold by
    Youden's J on validation at that epoch."""
    best = max(path, key=lambda n: (rank_auc(val_y, path[n]["val"]), -n))
    return Choice(best, seed, choose_threshold(val_y, path[best]["val"]), "validation", len(path))


def best_accuracy_threshold(y: np.ndarray, p: np.ndarray) -> tuple[float, float]:
    """The threshold that maximises accuracy on ``(y, p)`` (predict positive when ``p >= threshold``) and that
    accuracy. Only a protocol that looks at the test labels can use it."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    # Predicting the first i items (by score) positive: correct = positives among them + negatives after them.
    correct = np.concatenate([[0], np.cumsum(ys)]) + np.concatenate([[(ys == 0).sum()], (ys == 0).sum()
                                                                    - np.cumsum(ys == 0)])
    cut = np.r_[True, ps[1:] != ps[:-1], True]  # a threshold can only fall between distinct scores
    valid = np.flatnonzero(cut)
    i = int(valid[np.argmax(correct[valid])])
    threshold = float(ps[i - 1]) if i > 0 else float(np.nextafter(ps[0], np.inf)) if len(ps) else 0.5
    return threshold, float(correct[i] / max(len(y), 1))


def choose_on_test(paths: dict[int, dict[int, dict[str, np.ndarray]]], test_y: np.ndarray) -> Choice:
    """The leaky choice: over every (seed, epoch) configuration of ``paths`` (``{seed: path}``), the one whose
    accuracy at its best test threshold is highest (ties: the first)."""
    best, n = None, 0
    for seed, path in paths.items():
        for iterations, scores in path.items():
            n += 1
            threshold, accuracy = best_accuracy_threshold(test_y, scores["test"])
            if best is None or accuracy > best[0]:
                best = (accuracy, iterations, seed, threshold)
    return Choice(best[1], best[2], best[3], "test", n)
