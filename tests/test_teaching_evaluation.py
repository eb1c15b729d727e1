"""Notebook 04's checks: each says PASS for the reference solution, NOT YET for the stub, FAIL (with a useful
hint) for the typical wrong answers, and never raises."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from mammo_utils.course import evaluate as checks
from mammo_utils.course.solutions import evaluate as solutions
from mammo_utils.evaluate.metrics import bootstrap_ci


def _stub(*args, **kwargs):
    raise NotImplementedError


def _said(capsys) -> str:
    return capsys.readouterr().out.strip()


def _fails_with(capsys, check, answer, exercise: str, diagnosis: str) -> None:
    assert not check(answer)
    said = _said(capsys)
    assert said.startswith(f"FAIL ({exercise}") and "Hint:" in said
    assert diagnosis in said, said


# 4.1 sensitivity, specificity, balanced accuracy -----------------------------------------------------------------

def test_sensitivity_specificity_passes_and_waits(capsys):
    assert checks.check_sensitivity_specificity(solutions.my_sensitivity_specificity_balanced_accuracy)
    assert _said(capsys).startswith("PASS (4.1")
    assert not checks.check_sensitivity_specificity(_stub)
    assert _said(capsys).startswith("NOT YET (4.1")


def _strictly_above(y, p, threshold):
    return solutions.my_sensitivity_specificity_balanced_accuracy(y, p, np.nextafter(threshold, np.inf))


def _swapped(y, p, threshold):
    sens, spec, bal = solutions.my_sensitivity_specificity_balanced_accuracy(y, p, threshold)
    return spec, sens, bal


def _zero_for_undefined(y, p, threshold):
    return tuple(np.nan_to_num(solutions.my_sensitivity_specificity_balanced_accuracy(y, p, threshold)))


def _plain_accuracy(y, p, threshold):
    sens, spec, _ = solutions.my_sensitivity_specificity_balanced_accuracy(y, p, threshold)
    return sens, spec, float(np.mean((np.asarray(p) >= threshold) == np.asarray(y)))


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (_strictly_above, "p > threshold"),
    (_swapped, "swapped"),
    (_zero_for_undefined, "NaN, not 0"),
    (_plain_accuracy, "plain accuracy"),
    (lambda y, p, t: (0.5, 0.5), "three numbers"),
    (lambda y, p, t: "sens", "raised"),
])
def test_sensitivity_specificity_names_the_typical_slips(capsys, wrong, diagnosis):
    _fails_with(capsys, checks.check_sensitivity_specificity, wrong, "4.1", diagnosis)


# 4.2 Youden's J -------------------------------------------------------------------------------------------------

def test_youden_threshold_passes_and_waits(capsys):
    assert checks.check_youden_threshold(solutions.my_youden_threshold)
    assert _said(capsys).startswith("PASS (4.2")
    assert not checks.check_youden_threshold(_stub)
    assert _said(capsys).startswith("NOT YET (4.2")


def _best_accuracy(y, p):
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return 0.5
    return max(np.unique(p)[::-1], key=lambda t: np.mean((p >= t) == y))


def _lowest_on_a_tie(y, p):
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return 0.5
    js = [((p >= t)[y == 1].mean() - (p >= t)[y == 0].mean(), t) for t in np.unique(p)]  # lowest first
    return max(js, key=lambda jt: jt[0])[1]


def _no_one_class_case(y, p):
    y, p = np.asarray(y), np.asarray(p)
    if len(np.unique(y)) < 2:
        return float(p.max())
    return solutions.my_youden_threshold(y, p)


def _midpoint(y, p):
    """Youden's threshold moved halfway down to the next lower score: the same decisions, not a score."""
    t = solutions.my_youden_threshold(y, p)
    lower = np.unique(p)[np.unique(p) < t]
    return (t + lower.max()) / 2 if len(np.unique(y)) == 2 and len(lower) else t


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (_best_accuracy, "maximises ACCURACY"),
    (_lowest_on_a_tie, "keep the highest threshold"),
    (_midpoint, "return the validation score itself"),
    (_no_one_class_case, "return 0.5"),
])
def test_youden_threshold_names_the_typical_slips(capsys, wrong, diagnosis):
    _fails_with(capsys, checks.check_youden_threshold, wrong, "4.2", diagnosis)


# 4.3 patient bootstrap ------------------------------------------------------------------------------------------

def test_the_check_table_makes_an_image_bootstrap_clearly_too_narrow():
    df = checks.correlated_women()
    for i in range(3):
        d = df.sample(frac=1, replace=True, random_state=i)
        assert checks.roc_auc_or_nan(d) == pytest.approx(roc_auc_score(d.label, d.probability), abs=1e-12)
    statistic = lambda d: {"auc": checks.roc_auc_or_nan(d)}  # noqa: E731
    women = bootstrap_ci(df, statistic, 400, seed=0)["auc"]
    films = bootstrap_ci(df, statistic, 400, seed=0, group="image_id")["auc"]
    assert (films[1] - films[0]) < 0.6 * (women[1] - women[0])


def test_patient_bootstrap_passes_for_any_seed_convention_and_waits(capsys):
    assert checks.check_patient_bootstrap(solutions.my_patient_bootstrap_ci)
    assert _said(capsys).startswith("PASS (4.3")

    def other_draws(df, metric, n_resamples=1000, seed=0):  # a correct answer with different random draws
        return solutions.my_patient_bootstrap_ci(df, metric, n_resamples, seed + 1000)

    assert checks.check_patient_bootstrap(other_draws)
    assert _said(capsys).startswith("PASS (4.3")
    assert not checks.check_patient_bootstrap(_stub)
    assert _said(capsys).startswith("NOT YET (4.3")


def _by_image(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    values = [metric(df.iloc[rng.integers(0, len(df), size=len(df))]) for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def _without_replacement(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    women = [rows for _, rows in df.groupby("patient_id")]
    values = [metric(pd.concat([women[k] for k in rng.permutation(len(women))])) for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def _unseeded(df, metric, n_resamples=1000, seed=0):
    return solutions.my_patient_bootstrap_ci(df, metric, n_resamples, int(np.random.default_rng().integers(1e9)))


def _one_film_per_woman(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    rows_of = list(df.groupby("patient_id").indices.values())
    values = [metric(df.iloc[[rng.choice(rows_of[k]) for k in rng.integers(0, len(rows_of), len(rows_of))]])
              for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def _duplicates_dropped(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    rows_of = list(df.groupby("patient_id").indices.values())
    values = [metric(df.iloc[np.concatenate([rows_of[k] for k in np.unique(rng.integers(0, len(rows_of),
                                                                                           len(rows_of)))])])
              for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def _half_the_women(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    rows_of = list(df.groupby("patient_id").indices.values())
    values = [metric(df.iloc[np.concatenate([rows_of[k] for k in rng.choice(len(rows_of), len(rows_of) // 2,
                                                                            replace=False)])])
              for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.025, 0.975]))


def _ninety_percent(df, metric, n_resamples=1000, seed=0):
    rng = np.random.default_rng(seed)
    rows_of = list(df.groupby("patient_id").indices.values())
    values = [metric(df.iloc[np.concatenate([rows_of[k] for k in rng.integers(0, len(rows_of), len(rows_of))])])
              for _ in range(n_resamples)]
    return tuple(np.nanquantile(values, [0.05, 0.95]))


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (_by_image, "brings ALL her films"),
    (_one_film_per_woman, "brings ALL her films"),  # the women are drawn, but one film each
    (_duplicates_dropped, "keep the repeated draws"),
    (_half_the_women, "keep the repeated draws"),  # 20 of 40 women, without replacement
    (_ninety_percent, "cuts 2.5% from each end"),
    (_without_replacement, "WITH replacement"),
    (lambda df, metric, n, seed: solutions.my_patient_bootstrap_ci(df, metric, n, seed)[::-1], "low end first"),
    (_unseeded, "same seed"),
])
def test_patient_bootstrap_names_the_typical_slips(capsys, wrong, diagnosis):
    _fails_with(capsys, checks.check_patient_bootstrap, wrong, "4.3", diagnosis)


# 4.4 copy a sibling's label -------------------------------------------------------------------------------------

def test_copy_sibling_passes_and_waits(capsys):
    assert checks.check_copy_sibling(solutions.my_copy_sibling_accuracy)
    said = _said(capsys)
    assert said.startswith("PASS (4.4") and "1.00 on a screening set" in said
    assert not checks.check_copy_sibling(_stub)
    assert _said(capsys).startswith("NOT YET (4.4")


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda films: checks._copy_variant(films, same_breast_first=False), "SAME breast"),
    (lambda films: checks._copy_variant(films, include_self=True), "leave the film out"),
    (lambda films: checks._copy_variant(films, tie_positive=False), "tie"),
    (lambda films: checks._copy_variant(films) if checks._copy_variant(films) is not None else 0.0, "return None"),
])
def test_copy_sibling_names_the_typical_slips(capsys, wrong, diagnosis):
    _fails_with(capsys, checks.check_copy_sibling, wrong, "4.4", diagnosis)
