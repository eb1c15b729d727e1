"""Stage 04: fast patient-bootstrap metrics and their coverage, thresholds chosen on validation, the gain table of
the crop task with paired intervals, and the figures."""

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
from mammo_utils.evaluate.gain import GAIN_KEYS, paired_gain
from mammo_utils.evaluate.metrics import (
    METRICS,
    binary_metrics,
    bootstrap_ci,
    metrics_with_ci,
    patient_resample_weights,
    weighted_metrics,
)
from mammo_utils.evaluate.stage import evaluate_cross_validation, evaluate_predictions, run_evaluate
from mammo_utils.finetune.stage import run_finetune
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.stage import run_pretrain


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


def test_fast_interval_covers_the_true_auc_about_95_percent_of_the_time_and_is_as_wide_as_it_should_be():
    """Coverage near 95% on simulated test sets, and a width that matches the estimate's spread from one test set
    to the next (about 2 x 1.96 of its SD): an interval of [0, 1] covers everything and fails the second check,
    one that is too narrow fails the first."""
    true_auc = 0.7602  # two unit normals 1 apart: Phi(1/sqrt(2))
    trials = [metrics_with_ci(_sim(150, seed + 100), 0.5, n_resamples=1000, seed=seed)["roc_auc"]
              for seed in range(40)]
    hits = sum(m["low"] <= true_auc <= m["high"] for m in trials)
    assert hits / 40 >= 0.85  # 95% nominal; 40 trials leave room for sampling noise
    spread = np.std([m["value"] for m in trials], ddof=1)  # how much the AUC moves between test sets
    widths = np.array([m["high"] - m["low"] for m in trials])
    assert 2.5 * spread <= widths.mean() <= 5.5 * spread
    assert all(m["low"] <= m["value"] <= m["high"] for m in trials)


def _youden(y, p) -> float:
    """Youden's threshold written out independently: the cut maximising sensitivity + specificity - 1 (the
    highest such cut on ties)."""
    y, p = np.asarray(y).astype(int), np.asarray(p, dtype=float)
    cuts = np.unique(p)[::-1]
    j = [((p >= c) & (y == 1)).sum() / (y == 1).sum() - ((p >= c) & (y == 0)).sum() / (y == 0).sum() for c in cuts]
    return float(cuts[int(np.argmax(j))])


def _shifted(seed: int, shift: float, n_patients: int = 30, prefix: str = "") -> pd.DataFrame:
    """Validation and test predictions of one model whose scores drift upwards by ``shift`` on test: the cut
    that best separates the classes on validation (Youden) is not the one that would on test, so a threshold
    chosen on test, or on both splits pooled, gives other numbers. Two films per woman."""
    rng = np.random.default_rng(seed)
    rows = []
    for split, drift in (("val", 0.0), ("test", shift)):
        for w in range(n_patients):
            label = int(w % 3 == 0)
            for view in ("CC", "MLO"):
                prob = float(np.clip(0.3 + 0.2 * label + drift + rng.normal(0, 0.06), 0.01, 0.99))
                rows.append(dict(image_id=f"{prefix}{split}{w}{view}", patient_id=f"{prefix}{split}{w}", split=split,
                                 label=label, probability=prob))
    return pd.DataFrame(rows)


def _assert_scored_at_the_validation_threshold(entry: dict, df: pd.DataFrame) -> None:
    """``entry`` (threshold and metrics of one run) was scored on ``df``'s test rows at the Youden threshold of
    its validation rows, recomputed here; the case is one where the test's own Youden threshold differs."""
    val, test = df[df.split == "val"], df[df.split == "test"]
    chosen = _youden(val.label, val.probability)
    assert abs(_youden(test.label, test.probability) - chosen) > 0.1  # choosing on test would be caught
    assert entry["threshold"] == pytest.approx(chosen)
    decision = (test.probability >= chosen).astype(int)
    m = entry["metrics"]
    values = {k: (v["value"] if isinstance(v, dict) else v) for k, v in m.items()}
    assert values["accuracy"] == pytest.approx(accuracy_score(test.label, decision))
    assert values["sensitivity"] == pytest.approx(decision[test.label == 1].mean())
    assert values["specificity"] == pytest.approx(1 - decision[test.label == 0].mean())
    assert values["roc_auc"] == pytest.approx(roc_auc_score(test.label, test.probability))


def _cfg():
    return load_config("smoke", "synthetic", overrides=["evaluate.bootstrap_resamples=100"])


def test_headline_thresholds_are_youden_on_validation_not_on_test():
    cfg = _cfg()
    pred = pd.concat([_shifted(1, 0.25).assign(init="simclr"), _shifted(2, 0.3).assign(init="random")],
                     ignore_index=True).assign(task=cfg.task, headline=True, sweep=False)
    models = evaluate_predictions(pred, cfg)
    assert list(models) == ["simclr", "random"]
    for init, df in pred.groupby("init"):
        _assert_scored_at_the_validation_threshold(models[init], df)
        assert models[init]["n_test_patients"] == df.patient_id[df.split == "test"].nunique()


def test_cross_validation_thresholds_are_each_folds_own_validation_youden():
    cfg = _cfg()
    folds = [_shifted(20 + k, shift, prefix=f"F{k}").assign(cv_fold=k, init="random")
             for k, shift in enumerate((0.2, 0.3, 0.4))]
    cv = pd.concat(folds, ignore_index=True)
    out = evaluate_cross_validation(cv, cfg)["random"]
    assert out["n_folds"] == 3 and [f["cv_fold"] for f in out["per_fold"]] == [0, 1, 2]
    for f, df in zip(out["per_fold"], folds, strict=True):
        _assert_scored_at_the_validation_threshold(f, df)
    # Pooled: every test row once, each at its own fold's validation threshold (recomputed, not read back).
    test = cv[cv.split == "test"]
    own = test.cv_fold.map({k: _youden(d.label[d.split == "val"], d.probability[d.split == "val"])
                            for k, d in enumerate(folds)})
    decision = (test.probability >= own).astype(int)
    assert out["pooled"]["accuracy"]["value"] == pytest.approx(accuracy_score(test.label, decision))
    assert out["pooled"]["balanced_accuracy"]["value"] == pytest.approx(balanced_accuracy_score(test.label, decision))
    assert out["pooled"]["roc_auc"]["value"] == pytest.approx(roc_auc_score(test.label, test.probability))
    assert out["n_test_patients"] == test.patient_id.nunique() == 90
    assert out["all_negative_accuracy"] == pytest.approx((test.label == 0).mean())
    per_fold_auc = [roc_auc_score(d.label[d.split == "test"], d.probability[d.split == "test"]) for d in folds]
    assert out["fold_mean"]["roc_auc"] == pytest.approx(np.mean(per_fold_auc))
    assert out["fold_sd"]["roc_auc"] == pytest.approx(np.std(per_fold_auc, ddof=1))


def test_cross_validation_flags_a_woman_tested_in_two_folds():
    cfg = _cfg()
    folds = [_shifted(30 + k, 0.2, n_patients=12, prefix=f"F{k}").assign(cv_fold=k, init="random")
             for k in range(3)]
    assert evaluate_cross_validation(pd.concat(folds, ignore_index=True), cfg)["random"]["each_patient_tested_once"]
    leak = folds[0][folds[0].split == "test"].head(2).assign(cv_fold=1)  # fold 0's first test woman, again in 1
    leaky = pd.concat([*folds, leak], ignore_index=True)
    assert not evaluate_cross_validation(leaky, cfg)["random"]["each_patient_tested_once"]


def test_evaluation_writes_the_gain_table_from_the_crop_task_and_draws_the_figures(tiny_cfg):
    cfg = replace(tiny_cfg, finetune=replace(tiny_cfg.finetune, inits=("simclr", "random"), tasks=("abnormal",),
                                             classifiers=("linear", "full"), label_fractions=(0.5, 1.0), draws=2,
                                             full_fractions=(1.0,), crop_steps=2))
    run_prepare(cfg, workers=1)
    run_pretrain(cfg)
    ft = run_finetune(cfg)
    ev = run_evaluate(cfg)
    for name in ("label_efficiency.png", "by_density.png", "roc.png", "confusion.png"):
        with Image.open(ev / name) as im:
            assert im.format == "PNG" and im.width > 300 and im.height > 200, name
            pixels = np.asarray(im.convert("L"), dtype=float)
        assert (pixels < 128).mean() > 0.005, name  # something is drawn on the white canvas
    gain = json.loads((ev / "ssl_gain.json").read_text())
    assert gain == json.loads((ev / "metrics.json").read_text())["ssl_gain"]
    assert pd.read_csv(ev / "ssl_gain.csv").shape[0] == len(gain)
    crops = pd.read_csv(ft / "crop_predictions.csv")
    crop_rows = [r for r in gain if r["task"].startswith("lesion")]
    assert {(r["classifier"], r["label_fraction"]) for r in crop_rows} == {("linear", 0.5), ("linear", 1.0),
                                                                         ("full", 1.0)}
    for r in crop_rows:
        assert set(GAIN_KEYS) <= set(r)
        for init in ("simclr", "random", *(("pixels", "mean", "sd", "mean_sd") if r["classifier"] == "linear" else ())):
            test = crops[(crops.init == init) & (crops.classifier == r["classifier"]) & (crops.split == "test")
                         & np.isclose(crops.label_fraction, r["label_fraction"])]
            aucs = [roc_auc_score(d.label, d.probability) for _, d in test.groupby("draw")]
            assert len(aucs) == (2 if r["label_fraction"] < 1 and r["classifier"] == "linear" else 1)
            assert r[init] == pytest.approx(np.mean(aucs)), (init, r)  # the mean over the draws of women
        assert r["difference"] == pytest.approx(r["simclr"] - r["random"])
        assert r["ci_low"] <= r["difference"] <= r["ci_high"]
        assert r["n_test_women"] == crops[crops.split == "test"].patient_id.nunique()
    film_rows = [r for r in gain if r["task"].startswith("abnormal film")]
    films = pd.read_csv(ft / "film_predictions.csv")
    test = films[films.split == "test"]
    assert len(film_rows) == 1 and film_rows[0]["simclr"] == pytest.approx(
        roc_auc_score(test[test.init == "simclr"].label, test[test.init == "simclr"].probability))


def test_a_paired_gain_interval_excludes_zero_only_when_one_init_is_really_better():
    rng = np.random.default_rng(0)
    rows = []
    for w in range(60):
        label = w % 2
        for c in range(3):
            for draw in range(4):
                good = label + rng.normal(0, 0.5)
                rows += [dict(item_id=f"w{w}c{c}", patient_id=f"w{w}", label=label, draw=draw, init="a",
                              probability=good),
                         dict(item_id=f"w{w}c{c}", patient_id=f"w{w}", label=label, draw=draw, init="b",
                              probability=rng.normal(0, 1)),
                         dict(item_id=f"w{w}c{c}", patient_id=f"w{w}", label=label, draw=draw, init="a2",
                              probability=good)]
    rows = pd.DataFrame(rows)
    better = paired_gain(rows, "a", "b", [], 300, 0.95, 0)
    assert better["ci_low"] > 0 and better["difference"] == pytest.approx(better["a"] - better["b"])
    assert better["n_test_women"] == 60 and better["n_draws"] == 4
    same = paired_gain(rows, "a", "a2", [], 300, 0.95, 0)
    assert same["difference"] == 0 and same["ci_low"] == same["ci_high"] == 0  # paired: identical scores, no spread


def _table(markdown: str) -> tuple[dict[str, list[str]], list[str]]:
    """A markdown table as ``({first cell: the other cells}, header cells)``."""
    rows = [[c.strip() for c in line.strip().strip("|").split("|")] for line in markdown.splitlines()
            if line.startswith("|")]
    return {r[0]: r[1:] for r in rows[2:]}, rows[0]


def test_the_report_says_which_notebooks_only_walked_through_a_reused_stage(tmp_path):
    from mammo_utils.report import _provenance

    (tmp_path / "04_evaluate").mkdir()
    (tmp_path / "04_evaluate" / "metrics.json").write_text(json.dumps({"hardware": {}, "config": {}}))
    (tmp_path / "notebooks").mkdir()
    timings = {"01_prepare.ipynb": 8.0, "02_pretrain.ipynb": 35.0,
               "03_finetune.ipynb": 1006.0}
    (tmp_path / "notebooks" / "timings.json").write_text(json.dumps(timings))
    line = next(x for x in _provenance(tmp_path) if x.startswith("- Wall time"))
    assert "reused" not in line and "02 35 s" in line  # an older run, without reused.json: nothing claimed
    (tmp_path / "notebooks" / "reused.json").write_text(json.dumps(["02_pretrain.ipynb"]))
    line = next(x for x in _provenance(tmp_path) if x.startswith("- Wall time"))
    assert "02 35 s with its stage reused" in line and "03 1006 s)" in line and line.count("reused") == 2
