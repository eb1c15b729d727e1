"""Checks of notebook 06's exercises (the protocol study). Each compares the learner's answer with the package's
own implementation in :mod:`mammo_utils.protocols` on random tables, never with a copy of the solution."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mammo_utils.course import check
from mammo_utils.protocols import probe, splits
from mammo_utils.protocols.scoring import nearest_train_similarity


def _films(n_women: int, seed: int) -> pd.DataFrame:
    """Two films per woman (left and right) with random labels: the shape of MIAS."""
    rng = np.random.default_rng(seed)
    women = np.repeat([f"w{i:03d}" for i in range(n_women)], 2)
    return pd.DataFrame({"item_id": [f"{w}{s}" for w, s in zip(women, "LR" * n_women, strict=True)],
                         "image_id": [f"{w}{s}" for w, s in zip(women, "LR" * n_women, strict=True)],
                         "patient_id": women, "label": (rng.random(2 * n_women) < 0.35).astype(int)})


@check("6.1 Folds by woman", hint="Deal women, not films, into the folds; let each fold look like the whole set (about "
       "its share of women with a positive film, as the package's folds are stratified on each woman's worst "
       "label); and let the seed decide the order, so another seed gives other folds.",
       recipe="worst = films.groupby('patient_id')['label'].max(); for each label in turn, sort its women, shuffle "
       "them with one np.random.default_rng(seed), and deal them round-robin into folds 0..n_folds-1, continuing "
       "the count from one label to the next; then map each film to its woman's fold (films['patient_id'].map).")
def check_patient_folds(fn: Callable[[pd.DataFrame, int, int], pd.Series]) -> str:
    """``fn(films, n_folds, seed)`` -> one fold (0..n_folds-1) per row of ``films``: by woman (no woman in two
    folds), balanced, stratified on each woman's worst label (within one woman per fold in every stratum), the
    same for the same seed and different for other seeds."""
    for seed in range(3):
        films = _films(40 + 7 * seed, seed)
        fold = _folds(fn, films, seed)
        split = films.assign(fold=fold.to_numpy())
        for k in range(5):
            leak = splits.leak_profile(split, splits.fold_roles(split, k, "patient_id", seed, 0.25))
            assert leak["women_in_train_and_test"] == 0, (
                f"fold {k}: {leak['women_in_train_and_test']} women have films both in test and in training")
        women = split.groupby("fold")["patient_id"].nunique()
        assert women.max() - women.min() <= 2, f"folds should hold about as many women: {women.tolist()}"
        worst = split.groupby("patient_id").agg(label=("label", "max"), fold=("fold", "first"))
        for label, group in worst.groupby("label"):
            counts = group["fold"].value_counts().reindex(range(5), fill_value=0)
            assert counts.max() - counts.min() <= 1, (
                f"table {seed}: the {len(group)} women whose worst label is {label} fall {counts.tolist()} into the "
                "five folds: a fold with few positive women gives a noisy (or undefined) score; deal each worst "
                "label round-robin so that every fold gets its share (stratify)")
        assert _folds(fn, films, seed).equals(fold), "two calls with the same seed gave different folds"
        others = [_folds(fn, films, s) for s in (seed + 1, seed + 2)]
        assert any(_partition(o, films) != _partition(fold, films) for o in others), (
            f"seeds {seed}, {seed + 1} and {seed + 2} deal the women into the same folds: the order must come "
            "from np.random.default_rng(seed), so that each seed gives its own cross-validation")
    return ("by woman, balanced, stratified on the worst label, and seeded (what the package's stratified_folds "
            "does).")


def _folds(fn: Callable, films: pd.DataFrame, seed: int) -> pd.Series:
    fold = fn(films.copy(), 5, seed)
    if fold is None:
        raise NotImplementedError
    assert len(fold) == len(films), f"one fold per film: got {len(fold)} values for {len(films)} films"
    fold = pd.Series(np.asarray(fold), index=films.index).astype(int)
    assert set(fold) == set(range(5)), f"every fold 0..4 should be used, got {sorted(set(fold))}"
    return fold


def _partition(fold: pd.Series, films: pd.DataFrame) -> set[frozenset]:
    """The folds as sets of women, whatever their numbers."""
    return {frozenset(films.loc[fold == k, "patient_id"]) for k in range(5)}


def _copies_split(seed: int) -> tuple[pd.DataFrame, pd.Series]:
    films = _films(30, seed)
    k = 2 + seed % 3
    items = pd.concat([films.assign(item_id=films.image_id + f"~{c}") for c in range(k)], ignore_index=True)
    split = splits.a2_split(items, 5, seed)
    return split, splits.fold_roles(split, seed % 5, "item_id", seed, 0.25)


@check("6.2 Twin share", hint="A test item leaks when its FILM (not the item itself) also trains; an item in "
       "validation does not train. The share is over the test items.",
       recipe="Among the rows whose role is 'test', count those whose image_id also appears among the rows whose "
       "role is 'train' (not 'val'), and divide by the number of test rows; return a float.")
def check_twin_share(fn: Callable[[pd.DataFrame, pd.Series], float]) -> str:
    """``fn(items, role)`` -> the share of test items whose film has another item in training."""
    for seed in range(4):
        items, role = _copies_split(seed)
        got = fn(items, role)
        if got is None:
            raise NotImplementedError
        expected = splits.leak_profile(items, role)["test_share_film_in_train"]
        assert abs(float(got) - expected) < 1e-9, f"on split {seed} you got {float(got):.4f}, the package {expected:.4f}"
    return "matches leak_profile's test_share_film_in_train on four augment-then-split folds."


@check("6.3 The threshold a test set would choose", hint="Here the test set chooses, by plain accuracy (Youden's J "
       "weighs sensitivity and specificity, which is not accuracy): every cut between two distinct scores is a "
       "candidate, and so is calling everything negative.",
       recipe="For every distinct score t (positive when p >= t), and for a threshold above every score, compute "
       "the accuracy ((p >= t).astype(int) == y).mean(); keep the best; return (threshold, accuracy).")
def check_best_threshold(fn: Callable[[np.ndarray, np.ndarray], tuple[float, float]]) -> str:
    """``fn(y, p)`` -> (threshold, accuracy) maximising the accuracy of ``p >= threshold`` on ``(y, p)``."""
    rng = np.random.default_rng(0)
    for trial in range(12):
        n = int(rng.integers(10, 60))
        y = (rng.random(n) < rng.uniform(0.2, 0.6)).astype(int)
        p = np.round(np.clip(y * 0.15 + rng.random(n), 0, 1), 2)
        if trial >= 10:  # rare positives with the lowest scores: calling every film negative is the best cut
            y = np.r_[np.ones(2 + trial % 2, int), np.zeros(n, int)]
            p = np.round(np.r_[rng.uniform(0.0, 0.2, 2 + trial % 2), rng.uniform(0.3, 1.0, n)], 2)
        answer = fn(y.copy(), p.copy())
        if answer is None:
            raise NotImplementedError
        threshold, accuracy = (float(v) for v in answer)
        _, best = probe.best_accuracy_threshold(y, p)
        achieved = float(((p >= threshold).astype(int) == y).mean())
        assert abs(achieved - accuracy) < 1e-9, (
            f"trial {trial}: your threshold {threshold:.3f} gives accuracy {achieved:.3f}, not the {accuracy:.3f} "
            "you returned")
        assert abs(accuracy - best) < 1e-9, f"trial {trial}: the best accuracy is {best:.3f}, you found {accuracy:.3f}"
    return "finds the test-optimal threshold: exactly what A4 does, and what no honest protocol may do."


@check("6.4 Leakage fingerprint", hint="Cosine similarity compares directions only, so a scaled copy of a training "
       "row scores exactly 1; each test row keeps its single most similar training row.",
       recipe="Divide each row of train_x and of test_x by its Euclidean norm (np.linalg.norm(..., axis=1, "
       "keepdims=True)); then test @ train.T holds every cosine similarity; return the maximum of each row.")
def check_nearest_similarity(fn: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> str:
    """``fn(train_x, test_x)`` -> each test row's cosine similarity to its most similar training row."""
    rng = np.random.default_rng(1)
    for trial in range(5):
        train = rng.normal(size=(int(rng.integers(5, 40)), 16))
        test = np.vstack([train[:2] * rng.uniform(0.5, 3.0), rng.normal(size=(6, 16))])
        got = fn(train, test)
        if got is None:
            raise NotImplementedError
        expected = nearest_train_similarity(train, test)
        got = np.asarray(got, dtype=float).ravel()
        assert got.shape == expected.shape, f"one value per test row: expected {expected.shape}, got {got.shape}"
        assert np.allclose(got, expected, atol=1e-5), (
            f"trial {trial}: first values {np.round(got[:3], 3)} vs {np.round(expected[:3], 3)} (a scaled copy of "
            "a training row must score exactly 1)")
    return "matches nearest_train_similarity: scaled copies of training rows score 1."
