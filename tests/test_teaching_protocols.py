"""Notebook 06's checks: PASS with the reference solutions, NOT YET with the stubs, FAIL (with a hint) with the
typical mistakes, never an exception."""

import numpy as np
import pandas as pd

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
    by_film = lambda films, n, seed: pd.Series(np.arange(len(films)) % n, index=films.index)  # noqa: E731
    assert not check_patient_folds(by_film)
    assert "women have films both in test and in training" in said(capsys, "FAIL", "6.1 Folds by woman")
    assert not check_patient_folds(lambda films, n, seed: films.patient_id.map(lambda w: 0))
    assert "every fold 0..4" in said(capsys, "FAIL", "6.1 Folds by woman")


def test_twin_share(capsys):
    assert check_twin_share(my_twin_share)
    said(capsys, "PASS", "6.2 Twin share")
    assert not check_twin_share(stub)
    said(capsys, "NOT YET", "6.2 Twin share")

    def counting_validation_too(items, role):  # a twin in validation is not in training
        return float(items.loc[role == "test", "image_id"].isin(set(items.loc[role != "test", "image_id"])).mean())

    assert not check_twin_share(counting_validation_too)
    said(capsys, "FAIL", "6.2 Twin share")
    assert not check_twin_share(lambda items, role: 1 / 0)
    assert "raised ZeroDivisionError" in said(capsys, "FAIL", "6.2 Twin share")


def test_best_threshold(capsys):
    assert check_best_threshold(my_best_threshold)
    said(capsys, "PASS", "6.3 The threshold a test set would choose")
    assert not check_best_threshold(stub)
    said(capsys, "NOT YET", "6.3 The threshold a test set would choose")

    def youden(y, p):  # the honest rule, applied to test: not what maximises accuracy
        t = choose_threshold(y, p)
        return t, float(((p >= t).astype(int) == y).mean())

    assert not check_best_threshold(youden)
    assert "Hint:" in said(capsys, "FAIL", "6.3 The threshold a test set would choose")


def test_nearest_similarity(capsys):
    assert check_nearest_similarity(my_nearest_similarity)
    said(capsys, "PASS", "6.4 Leakage fingerprint")
    assert not check_nearest_similarity(stub)
    said(capsys, "NOT YET", "6.4 Leakage fingerprint")
    assert not check_nearest_similarity(lambda tr, te: (te @ tr.T).max(axis=1))  # dot products, not cosines
    said(capsys, "FAIL", "6.4 Leakage fingerprint")
