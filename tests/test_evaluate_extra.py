"""Stage 04's additions: fast patient-bootstrap metrics, sweep entries, label-efficiency and density figures."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    roc_auc_score,
)

from mammo_utils.config import load_config
from mammo_utils.evaluate import evaluate_cross_validation, run_evaluate
from mammo_utils.finetune import run_finetune
from mammo_utils.metrics import (
    METRICS,
    binary_metrics,
    bootstrap_ci,
    metrics_with_ci,
    patient_resample_weights,
    weighted_metrics,
)
from mammo_utils.prepare import run_prepare
from mammo_utils.report import label_efficiency_table, results_table


def _sim(n_patients, seed, separation=1.0, images=2, decimals=None):
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        label = int(rng.random() < 0.3)
        for _ in range(images):
            prob = 1 / (1 + np.exp(-rng.normal(separation * label, 1.0)))
            rows.append(dict(patient_id=f"P{p}", label=label, probability=prob if decimals is None
                             else round(prob, decimals)))
    return pd.DataFrame(rows)


def test_weighted_metrics_equal_scikit_learn_on_the_resampled_rows_ties_included():
    df = _sim(30, 0, decimals=1)  # one decimal: many tied scores
    y, p = df.label.to_numpy(), df.probability.to_numpy()
    threshold = 0.5
    weights = next(patient_resample_weights(df.patient_id, 20, seed=1))
    fast = weighted_metrics(y, p, (p >= threshold).astype(int), weights)
    for r, w in enumerate(weights):
        rows = np.repeat(np.arange(len(df)), w.astype(int))
        yr, pr = y[rows], p[rows]
        pred = (pr >= threshold).astype(int)
        if len(np.unique(yr)) < 2:
            assert np.isnan(fast["roc_auc"][r])
            continue
        assert fast["accuracy"][r] == pytest.approx(accuracy_score(yr, pred))
        assert fast["balanced_accuracy"][r] == pytest.approx(balanced_accuracy_score(yr, pred))
        assert fast["roc_auc"][r] == pytest.approx(roc_auc_score(yr, pr))
        assert fast["pr_auc"][r] == pytest.approx(average_precision_score(yr, pr))
        assert fast["f1"][r] == pytest.approx(f1_score(yr, pred, zero_division=0))
        assert fast["sensitivity"][r] == pytest.approx(pred[yr == 1].mean())
        assert fast["specificity"][r] == pytest.approx(1 - pred[yr == 0].mean())


def test_fast_intervals_equal_the_plain_patient_bootstrap():
    df = _sim(60, 2)
    fast = metrics_with_ci(df, 0.5, n_resamples=200, seed=7)
    slow = bootstrap_ci(df, lambda d: binary_metrics(d["label"], d["probability"], 0.5), 200, seed=7)
    for k in METRICS:
        assert fast[k]["low"] == pytest.approx(slow[k][0]) and fast[k]["high"] == pytest.approx(slow[k][1])


def test_fast_interval_covers_the_true_auc_about_95_percent_of_the_time():
    true_auc = 0.7602  # two unit normals 1 apart: Phi(1/sqrt(2))
    hits = sum(
        (m := metrics_with_ci(_sim(150, seed + 100), 0.5, n_resamples=1000, seed=seed)["roc_auc"])["low"]
        <= true_auc <= m["high"]
        for seed in range(40)
    )
    assert hits / 40 >= 0.85  # 95% nominal; 40 trials leave room for sampling noise


def test_per_row_thresholds_and_pooled_cross_validation():
    folds = []
    for k in range(3):
        df = _sim(40, 10 + k)
        df["patient_id"] = f"F{k}" + df["patient_id"]
        half = df.patient_id.isin(df.patient_id.unique()[:20])
        folds.append(df.assign(split=np.where(half, "val", "test"), cv_fold=k, init="random"))
    cv = pd.concat(folds, ignore_index=True)
    cfg = load_config("smoke", "synthetic", overrides=["evaluate.bootstrap_resamples=100"])
    out = evaluate_cross_validation(cv, cfg)["random"]
    assert out["n_folds"] == 3 and out["each_patient_tested_once"]
    test = cv[cv.split == "test"]
    thresholds = test.cv_fold.map({f["cv_fold"]: f["threshold"] for f in out["per_fold"]}).to_numpy()
    pred = (test.probability.to_numpy() >= thresholds).astype(int)
    assert out["pooled"]["accuracy"]["value"] == pytest.approx(accuracy_score(test.label, pred))
    assert out["pooled"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(test.label, test.probability))
    assert out["fold_mean"]["roc_auc"] == pytest.approx(np.mean([f["metrics"]["roc_auc"] for f in out["per_fold"]]))


def _youden(y, p) -> float:
    """Youden's threshold written out independently: the cut maximising sensitivity + specificity - 1 (the
    highest such cut on ties)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    cuts = np.unique(p)[::-1]
    j = [((p >= c) & (y == 1)).sum() / (y == 1).sum() - ((p >= c) & (y == 0)).sum() / (y == 0).sum() for c in cuts]
    return float(cuts[int(np.argmax(j))])


def test_evaluation_scores_every_sweep_run_and_draws_the_new_figures(tiny_cfg):
    cfg = replace(tiny_cfg, finetune=replace(tiny_cfg.finetune, inits=("random",), tasks=("abnormal",),
                                             protocols=("linear", "full"), label_fractions=(0.5, 1.0), sweep_seeds=2))
    run_prepare(cfg, workers=1)
    ft = run_finetune(cfg)
    ev = run_evaluate(cfg)
    metrics = json.loads((ev / "metrics.json").read_text())
    for name in ("label_efficiency.png", "by_density.png", "roc.png", "confusion.png"):
        with Image.open(ev / name) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200, name
    runs = metrics["label_efficiency"]["runs"]
    assert {(r["protocol"], r["label_fraction"]) for r in runs} == {("linear", 0.5), ("linear", 1.0),
                                                                    ("full", 0.5), ("full", 1.0)}
    pred = pd.read_csv(ft / "predictions.csv")
    for r in runs:
        assert [s["seed"] for s in r["seeds"]] == [0, 1]  # every point, every seed
        for s in r["seeds"]:
            m = s["metrics"]
            assert s["n_train_patients"] > 0 and set(m) == set(METRICS)
            rows = pred[(pred.protocol == r["protocol"]) & np.isclose(pred.label_fraction, r["label_fraction"])
                        & pred.sweep & (pred.seed == s["seed"])]
            test, val = rows[rows.split == "test"], rows[rows.split == "val"]
            assert m["roc_auc"]["value"] == pytest.approx(roc_auc_score(test.label, test.probability))
            assert s["threshold"] == pytest.approx(_youden(val.label, val.probability))  # chosen on validation
            pred_t = (test.probability >= s["threshold"]).astype(int)
            assert m["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(test.label, pred_t))
            assert m["f1"]["value"] == pytest.approx(f1_score(test.label, pred_t, zero_division=0))
            assert all(v["low"] <= v["high"] for v in m.values() if np.isfinite(v["low"]))
        aucs = [s["metrics"]["roc_auc"]["value"] for s in r["seeds"]]
        assert r["over_seeds"]["roc_auc"]["mean"] == pytest.approx(np.mean(aucs))
        assert r["over_seeds"]["roc_auc"]["sd"] == pytest.approx(np.std(aucs, ddof=1))
    # The headline model is the one stages 04's table and 05 use: still one row per init.
    assert list(metrics["models"]) == ["random"]
    headline = pred[pred.headline & (pred.split == "test")]
    assert metrics["models"]["random"]["n_test_images"] == len(headline)
    assert set(metrics["by_density"]["random"]) <= {"A", "B", "C", "D"}
    assert "| random init" in results_table(metrics)
    table = label_efficiency_table(metrics)
    assert "random, linear" in table and "50% of labels" in table
