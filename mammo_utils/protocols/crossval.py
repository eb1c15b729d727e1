"""One arm, one initialisation, one seed: k-fold cross-validation of the frozen-feature logistic regression.

In fold k the arm's split (:func:`mammo_utils.protocols.splits.fold_roles`) says which items train, validate and
test; the features are the fold's backbone's (:mod:`mammo_utils.protocols.features`), standardised on the
training items; the regression runs along its iteration path (:mod:`mammo_utils.protocols.probe`), and the
epoch, seed and threshold are chosen on validation, or on test where the arm says so. The test predictions of
the folds are pooled, each with its own fold's threshold.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from mammo_utils.protocols import probe, splits
from mammo_utils.protocols.arms import Arm
from mammo_utils.protocols.scoring import nearest_train_similarity

ROW_COLUMNS = ["item_id", "image_id", "patient_id", "label", "fold", "probability", "threshold"]


@dataclass
class ArmRun:
    """The pooled test predictions of one cross-validated run, what each fold leaked and chose, and (when asked)
    each test item's similarity to its nearest training item."""

    rows: pd.DataFrame
    folds: list[dict] = field(default_factory=list)
    similarity: np.ndarray | None = None


@dataclass(frozen=True)
class ProbeSettings:
    """The regression's fixed settings: ``c``, the iteration stops, and the configurations A4 and A5 search."""

    c: float
    iterations: tuple[int, ...]
    n_configurations: int


def fold_rows(test: pd.DataFrame, probability: np.ndarray, threshold: float) -> pd.DataFrame:
    """The pooled-prediction rows of one fold's test items."""
    return test.assign(probability=np.asarray(probability, dtype=float), threshold=float(threshold))[ROW_COLUMNS]


def fit_fold(arm: Arm, x: np.ndarray, y: np.ndarray, role: pd.Series, seed: int, settings: ProbeSettings
             ) -> tuple[np.ndarray, probe.Choice]:
    """Fit and choose on one fold; returns the test probabilities and the choice made."""
    tr, va, te = (role == splits.TRAIN).to_numpy(), (role == splits.VAL).to_numpy(), (role == splits.TEST).to_numpy()
    if len(np.unique(y[tr])) < 2:  # a tiny fold with one class: the training prior, and say so in the choice
        prior = np.full(te.sum(), y[tr].mean() if tr.any() else 0.5)
        return prior, probe.Choice(0, seed, 0.5, "one class in training", 0)
    z_tr, z_va, z_te = probe.standardise(x[tr], x[va], x[te])
    if not arm.select_on_test:
        path = probe.logistic_path(z_tr, y[tr], {"val": z_va, "test": z_te}, settings.c, settings.iterations, seed)
        choice = probe.choose_on_validation(path, y[va], seed)
        return path[choice.iterations]["test"], choice
    n_seeds = math.ceil(settings.n_configurations / len(settings.iterations))
    paths, left = {}, settings.n_configurations
    for j in range(n_seeds):
        stops = settings.iterations[: min(left, len(settings.iterations))]
        paths[seed * 1000 + j] = probe.logistic_path(z_tr, y[tr], {"test": z_te}, settings.c, stops, seed * 1000 + j)
        left -= len(stops)
    choice = probe.choose_on_test(paths, y[te])
    return paths[choice.seed][choice.iterations]["test"], choice


@dataclass(frozen=True)
class FoldPlan:
    """One fold of an arm's split: the role of each item and the leak measured (:func:`~.splits.leak_profile`)."""

    k: int
    role: pd.Series
    leak: dict


def fold_plans(arm: Arm, items: pd.DataFrame, seed: int, n_folds: int, val_share: float) -> list[FoldPlan]:
    """Every fold of an arm's split with a test item, computed once and shared by every model of the arm."""
    items = items.reset_index(drop=True)
    plans = []
    for k in range(n_folds):
        role = splits.fold_roles(items, k, arm.unit, seed, val_share)
        if (role == splits.TEST).any():
            plans.append(FoldPlan(k, role, splits.leak_profile(items, role)))
    return plans


def run_logistic(arm: Arm, items: pd.DataFrame, features: Callable[[int], np.ndarray], seed: int, n_folds: int,
                 val_share: float, settings: ProbeSettings, fingerprint: bool = False,
                 plans: list[FoldPlan] | None = None) -> ArmRun:
    """Cross-validate the frozen-feature regression of one arm.

    Args:
        arm: the protocol. items: its items with the arm's ``fold`` (:func:`mammo_utils.protocols.arms.split_arm`).
        features: fold k -> (len(items), D) features of the items under fold k's backbone, in the items' order.
        seed: the run's seed (validation draw, starting weights). n_folds: folds. val_share: see
            :func:`~mammo_utils.protocols.splits.fold_roles`. settings: the regression's fixed settings.
        fingerprint: also measure each test item's cosine similarity to its nearest training item.
        plans: the arm's folds (:func:`fold_plans`), when already computed.
    """
    items = items.reset_index(drop=True)
    y = items["label"].to_numpy().astype(int)
    out, similarity = ArmRun(pd.DataFrame(columns=ROW_COLUMNS)), []
    parts = []
    for plan in plans if plans is not None else fold_plans(arm, items, seed, n_folds, val_share):
        k, role = plan.k, plan.role
        x = features(k)
        p, choice = fit_fold(arm, x, y, role, seed, settings)
        parts.append(fold_rows(items[(role == splits.TEST).to_numpy()], p, choice.threshold))
        out.folds.append({"fold": k, **plan.leak, "iterations": choice.iterations,
                          "seed": choice.seed, "threshold": choice.threshold, "chosen_on": choice.chosen_on,
                          "n_configurations": choice.n_configurations})
        if fingerprint:
            tr, te = (role == splits.TRAIN).to_numpy(), (role == splits.TEST).to_numpy()
            z_tr, z_te = probe.standardise(x[tr], x[te])
            similarity.append(nearest_train_similarity(z_tr, z_te))
    out.rows = pd.concat(parts, ignore_index=True) if parts else out.rows
    out.similarity = np.concatenate(similarity) if similarity else None
    return out
