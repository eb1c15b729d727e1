"""One-nearest-neighbour, the model that memorises by construction, under an arm's split.

A test item takes the label of the most similar non-test item (cosine similarity of features standardised on
those items: raw pixels, or a backbone's features). It learns nothing but its memory, so it shows what a leak can
pay at most when the leaked item is found: a twin in training is the nearest item whenever it is the most similar,
and then its label is copied, right or wrong, real or random.

The score of a test item is ``s_pos - s_neg``, its similarity to the nearest positive minus that to the nearest
negative memory item: the 1-NN rule is ``score > 0``, and the score orders items for a ROC curve. Nothing is chosen
on validation (validation items join the memory); A4 and A5 choose the threshold on test instead of 0.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mammo_utils.protocols import probe, splits
from mammo_utils.protocols.arms import Arm
from mammo_utils.protocols.crossval import ROW_COLUMNS, ArmRun, FoldPlan, fold_plans, fold_rows


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def nearest_scores(memory_x: np.ndarray, memory_y: np.ndarray, test_x: np.ndarray, chunk: int = 1024
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """1-NN of each test row among the memory rows (cosine similarity of rows as given).

    Returns:
        ``(score, nearest, similarity)``: ``s_pos - s_neg`` per test row (positive: the nearest memory item is
        positive), the index of the nearest memory row, and its similarity.
    """
    mem, te = unit_rows(memory_x), unit_rows(test_x)
    pos, neg = np.asarray(memory_y) == 1, np.asarray(memory_y) == 0
    score, nearest, similarity = [], [], []
    for i in range(0, len(te), chunk):
        sim = te[i : i + chunk] @ mem.T
        best_pos = sim[:, pos].max(axis=1) if pos.any() else np.full(len(sim), -1.0)
        best_neg = sim[:, neg].max(axis=1) if neg.any() else np.full(len(sim), -1.0)
        score.append(best_pos - best_neg)
        nearest.append(sim.argmax(axis=1))
        similarity.append(sim.max(axis=1))
    if not score:
        return np.zeros(0), np.zeros(0, dtype=int), np.zeros(0)
    return np.concatenate(score), np.concatenate(nearest), np.concatenate(similarity)


def run_nearest(arm: Arm, items: pd.DataFrame, features: Callable[[int], np.ndarray], seed: int, n_folds: int,
                val_share: float, plans: list[FoldPlan] | None = None) -> ArmRun:
    """Cross-validate 1-NN under one arm.

    Args:
        arm: the protocol. items: its items with the arm's ``fold``. features: fold k -> (len(items), D) features
            in the items' order. seed, n_folds, val_share: the arm's split (:func:`~.splits.fold_roles`).
        plans: the arm's folds (:func:`~.crossval.fold_plans`), when already computed.

    Returns:
        The pooled test rows, per fold the leak measured (with ``nearest_is_twin``: the share of test items whose
        nearest memory item is of the same film, and ``nearest_is_same_woman``) and the fingerprint.
    """
    items = items.reset_index(drop=True)
    y = items["label"].to_numpy().astype(int)
    out, parts, similarity = ArmRun(pd.DataFrame(columns=ROW_COLUMNS)), [], []
    for plan in plans if plans is not None else fold_plans(arm, items, seed, n_folds, val_share):
        k, te = plan.k, (plan.role == splits.TEST).to_numpy()
        memory = ~te
        x = features(k)
        z_mem, z_te = probe.standardise(x[memory], x[te])
        score, nearest, sim = nearest_scores(z_mem, y[memory], z_te)
        threshold, chosen_on = 0.0, "none (the 1-NN rule)"
        if arm.select_on_test:
            threshold, _ = probe.best_accuracy_threshold(y[te], score)
            chosen_on = "test"
        test, mem = items[te], items[memory]
        parts.append(fold_rows(test, score, threshold))
        similarity.append(sim)
        near = mem.iloc[nearest]
        out.folds.append({"fold": k, **plan.leak, "seed": seed, "threshold": threshold,
                          "chosen_on": chosen_on, "n_configurations": 1,
                          "nearest_is_twin": float((near.image_id.astype(str).to_numpy()
                                                    == test.image_id.astype(str).to_numpy()).mean()),
                          "nearest_is_same_woman": float((near.patient_id.astype(str).to_numpy()
                                                          == test.patient_id.astype(str).to_numpy()).mean())})
    out.rows = pd.concat(parts, ignore_index=True) if parts else out.rows
    out.similarity = np.concatenate(similarity) if similarity else None
    return out
