"""Notebook 06's checks: PASS with the reference solutions, NOT YET with the stubs, FAIL (with a hint) with the
typical mistakes, never an exception."""

import numpy as np
import pandas as pd
import pytest

from mammo_utils.course.protocols import (
    check_best_threshold,
    check_nearest_similarity,
    check_patient_folds,
    check_twin_share,
)
from mammo_utils.course.solutions.protocols import (
    my_best_threshold,
    my_nearest_similarity,
    my_patient_folds,
    my_twin_share,
)
from mammo_utils.evaluate.metrics import choose_threshold


def stub(*args):
    raise NotImplementedError


def said(capsys, status: str, exercise: str) -> str:
    out = capsys.readouterr().out
    assert out.startswith(f"{status} ({exercise})"), out
    return out


def test_patient_folds(capsys):
    assert check_patient_folds(my_patient_folds)
    said(capsys, "PASS", "6.1 Folds by woman")
    assert not check_patient_folds(stub)
    said(capsys, "NOT YET", "6.1 Folds by woman")


def _shuffled_women_dealt(films, n, seed):  # by woman and seeded, but not stratified
    women = np.array(sorted(films.patient_id.unique()))
    women = women[np.random.default_rng(seed).permutation(len(women))]
    return films.patient_id.map({w: i % n for i, w in enumerate(women)})


def _stratified_unseeded(films, n, seed):  # stratified by woman, in the same order whatever the seed
    return my_patient_folds(films, n, 0)


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda films, n, seed: pd.Series(np.arange(len(films)) % n, index=films.index),
     "women have films both in test and in training"),  # dealt by film
    (lambda films, n, seed: films.patient_id.map(lambda w: 0), "every fold 0..4"),
    (lambda films, n, seed: pd.Series(pd.factorize(films.patient_id)[0] % n, index=films.index), "stratify"),
    (_shuffled_women_dealt, "stratify"),
    (_stratified_unseeded, "np.random.default_rng(seed)"),
])
def test_patient_folds_mistakes_fail(wrong, says, capsys):
    assert not check_patient_folds(wrong)
    assert says in said(capsys, "FAIL", "6.1 Folds by woman")


def test_twin_share(capsys):
    assert check_twin_share(my_twin_share)
    said(capsys, "PASS", "6.2 Twin share")
    assert not check_twin_share(stub)
    said(capsys, "NOT YET", "6.2 Twin share")


def _counting_validation_too(items, role):  # a twin in validation is not in training
    return float(items.loc[role == "test", "image_id"].isin(set(items.loc[role != "test", "image_id"])).mean())


def _by_item(items, role):  # the item itself never trains: its twins do
    return float(items.loc[role == "test", "item_id"].isin(set(items.loc[role == "train", "item_id"])).mean())


def _over_all_items(items, role):
    test = items.loc[role == "test", "image_id"]
    return float(test.isin(set(items.loc[role == "train", "image_id"])).sum() / len(items))


@pytest.mark.parametrize(("wrong", "says"), [
    (_counting_validation_too, "on split"),
    (_by_item, "on split"),
    (_over_all_items, "on split"),
    (lambda items, role: 1 / 0, "raised ZeroDivisionError"),
])
def test_twin_share_mistakes_fail(wrong, says, capsys):
    assert not check_twin_share(wrong)
    assert says in said(capsys, "FAIL", "6.2 Twin share")


def test_best_threshold(capsys):
    assert check_best_threshold(my_best_threshold)
    said(capsys, "PASS", "6.3 The threshold a test set would choose")
    assert not check_best_threshold(stub)
    said(capsys, "NOT YET", "6.3 The threshold a test set would choose")


def _youden(y, p):  # the honest rule, applied to test: not what maximises accuracy
    t = choose_threshold(y, p)
    return t, float(((p >= t).astype(int) == y).mean())


def _strictly_above(y, p):  # p > t: the best cut it can make is not always reachable
    best = max((float(np.mean((p > t).astype(int) == y)), t) for t in np.unique(p))
    return best[1], best[0]


def _never_all_negative(y, p):  # only the scores as thresholds: 'call everything negative' is never tried
    best = max((float(np.mean((p >= t).astype(int) == y)), t) for t in np.unique(p))
    return best[1], best[0]


@pytest.mark.parametrize("wrong", [_youden, _strictly_above, _never_all_negative])
def test_best_threshold_mistakes_fail(wrong, capsys):
    assert not check_best_threshold(wrong)
    assert "Hint:" in said(capsys, "FAIL", "6.3 The threshold a test set would choose")


def test_nearest_similarity(capsys):
    assert check_nearest_similarity(my_nearest_similarity)
    said(capsys, "PASS", "6.4 Leakage fingerprint")
    assert not check_nearest_similarity(stub)
    said(capsys, "NOT YET", "6.4 Leakage fingerprint")


def _test_rows_normalised_only(train, test):
    return (test / np.linalg.norm(test, axis=1, keepdims=True) @ train.T).max(axis=1)


def _mean_not_max(train, test):
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    return (b @ a.T).mean(axis=1)


def _nearest_by_distance(train, test):  # the Euclidean nearest row's cosine: a scaled copy is far away
    nearest = np.linalg.norm(test[:, None] - train[None], axis=2).argmin(axis=1)
    a = train[nearest] / np.linalg.norm(train[nearest], axis=1, keepdims=True)
    return (a * test / np.linalg.norm(test, axis=1, keepdims=True)).sum(axis=1)


@pytest.mark.parametrize("wrong", [
    lambda tr, te: (te @ tr.T).max(axis=1),  # dot products, not cosines
    _test_rows_normalised_only,
    _mean_not_max,
    _nearest_by_distance,
])
def test_nearest_similarity_mistakes_fail(wrong, capsys):
    assert not check_nearest_similarity(wrong)
    assert "Hint:" in said(capsys, "FAIL", "6.4 Leakage fingerprint")
