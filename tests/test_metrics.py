import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from mammo_utils.evaluate.metrics import binary_metrics, bootstrap_ci, choose_threshold, metrics_with_ci


def _sim(n_patients, seed, separation=1.0):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.random() < 0.3)
        for _ in range(2):
            score = rng.normal(separation * label, 1.0)
            rows.append(dict(patient_id=f"P{p}", label=label, probability=1 / (1 + np.exp(-score))))
    return pd.DataFrame(rows)


def test_point_estimates_agree_with_scikit_learn():
    df = _sim(200, 0)
    y, p = df.label.to_numpy(), df.probability.to_numpy()
    m = binary_metrics(y, p, 0.5)
    pred = (p >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert m["pr_auc"] == pytest.approx(average_precision_score(y, p))
    assert m["f1"] == pytest.approx(f1_score(y, pred))
    assert m["sensitivity"] == pytest.approx(pred[y == 1].mean())
    assert m["specificity"] == pytest.approx(1 - pred[y == 0].mean())


def test_threshold_from_validation_separates_a_separable_set():
    y = np.array([0, 0, 0, 1, 1])
    t = choose_threshold(y, np.array([0.1, 0.2, 0.3, 0.7, 0.9]))
    assert 0.3 < t <= 0.7


@pytest.mark.parametrize("seed", range(5))
def test_threshold_is_youdens_cut_written_out(seed):
    """The cut maximising sensitivity + specificity - 1 over every distinct score (the highest on ties), as a
    reader would compute it by hand; one decimal gives many tied scores."""
    df = _sim(40, seed)
    y, p = df.label.to_numpy(), df.probability.round(1).to_numpy()
    cuts = np.unique(p)[::-1]
    j = [(p[y == 1] >= c).mean() - (p[y == 0] >= c).mean() for c in cuts]
    assert choose_threshold(y, p) == pytest.approx(cuts[int(np.argmax(j))])


def test_bootstrap_interval_covers_the_true_auc_about_95_percent_of_the_time():
    # The population AUC of two unit normals 1 apart is Phi(1/sqrt(2)) = 0.7602. The interval under test is
    # the one every reported number carries (metrics_with_ci, 1,000 patient resamples).
    true_auc = 0.7602
    trials = 100
    hits = sum(lo <= true_auc <= hi for lo, hi in (
        (m["low"], m["high"]) for m in (metrics_with_ci(_sim(150, seed + 100), 0.5, 1000, seed=seed)["roc_auc"]
                                        for seed in range(trials))))
    # 95% nominal: a correct interval lands in [0.89, 0.99] over 100 trials with probability about 0.99.
    assert 0.89 <= hits / trials <= 0.99  # and an interval that always covers is too wide


def test_generic_bootstrap_agrees_with_the_vectorised_one():
    df = _sim(150, 7)
    lo, hi = bootstrap_ci(df, lambda d: {"auc": roc_auc_score(d.label, d.probability)}, 400, seed=3)["auc"]
    fast = metrics_with_ci(df, 0.5, 400, seed=3)["roc_auc"]
    assert abs(lo - fast["low"]) < 0.03 and abs(hi - fast["high"]) < 0.03


def test_intervals_contain_the_estimate_and_narrow_with_more_patients():
    small = metrics_with_ci(_sim(40, 1), 0.5, 300)["roc_auc"]
    large = metrics_with_ci(_sim(400, 1), 0.5, 300)["roc_auc"]
    for m in (small, large):
        assert m["low"] <= m["value"] <= m["high"]
    assert large["high"] - large["low"] < small["high"] - small["low"]


def test_auc_or_half_is_scikit_learns_roc_auc_with_ties_and_chance_for_one_class():
    from sklearn.metrics import roc_auc_score

    from mammo_utils.evaluate.metrics import auc_or_half

    rng = np.random.default_rng(0)
    for n in (5, 40, 301):
        y = rng.integers(0, 2, n)
        y[:2] = (0, 1)
        for score in (rng.normal(size=n), np.round(rng.normal(size=n), 1), rng.integers(0, 3, n)):  # ties too
            assert auc_or_half(y, score) == pytest.approx(roc_auc_score(y, score), abs=1e-12)
    assert auc_or_half(np.array([1, 1, 0, 0]), np.array([0.1, 0.2, 0.8, 0.9])) == 0.0  # ranked backwards
    assert auc_or_half(np.ones(4), np.arange(4.0)) == 0.5
