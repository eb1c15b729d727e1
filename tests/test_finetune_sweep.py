"""Stage 03's label-efficiency sweep, linear probe, label fractions and patient-level cross-validation."""

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils.evaluate import run_evaluate
from mammo_utils.finetune import run_finetune
from mammo_utils.linear_probe import extract_features, fit_linear_head, head_probabilities
from mammo_utils.manifest import assign_splits, cross_validation_split, patient_strata, subsample_patients
from mammo_utils.models import Classifier, resnet50_backbone
from mammo_utils.prepare import run_prepare
from mammo_utils.report import claim_table


def _images(n_patients: int = 60, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        abnormal = int(rng.random() < 0.5)
        malignant = int(abnormal and rng.random() < 0.4)
        for view in ("CC", "MLO"):
            rows.append(dict(image_id=f"P{p}_{view}", patient_id=f"P{p}", abnormal=abnormal, malignant=malignant,
                             split="", fold=""))
    return pd.DataFrame(rows)


@pytest.mark.parametrize("fraction", [0.1, 0.25, 0.5])
def test_label_fractions_keep_whole_patients_in_every_stratum(fraction):
    images = _images()
    kept = subsample_patients(images, fraction, seed=3)
    strata, kept_strata = patient_strata(images), patient_strata(kept)
    for s in strata.unique():
        n = int((strata == s).sum())
        assert int((kept_strata == s).sum()) == max(1, round(n * fraction))
    # Whole patients: every kept patient keeps all its images.
    assert kept.groupby("patient_id").size().eq(2).all()
    assert subsample_patients(images, fraction, seed=3).equals(kept)  # seeded
    assert not subsample_patients(images, fraction, seed=4).equals(kept)


def test_cross_validation_tests_every_patient_once_and_never_trains_on_it():
    images = assign_splits(_images(), n_folds=5, seed=0)
    tested = []
    for k in range(5):
        fold = cross_validation_split(images, k, 5)
        roles = fold.groupby("patient_id")["split"].agg(set)
        assert roles.map(len).eq(1).all()  # a patient has one role per fold
        test = set(roles.index[roles == {"test"}])
        assert test.isdisjoint(roles.index[roles != {"test"}])
        assert set(fold.loc[fold.split == "test", "fold"]) == {k}
        tested += sorted(test)
    assert sorted(tested) == sorted(images.patient_id.unique())  # each patient tested exactly once


def test_linear_probe_leaves_the_backbone_untouched_and_its_head_plugs_into_the_classifier(tiny_cfg):
    torch.manual_seed(0)
    backbone = resnet50_backbone("random")
    before = {k: v.clone() for k, v in backbone.state_dict().items()}  # batch-norm statistics included
    images = torch.rand(24, 1, 32, 32)
    y = torch.tensor([0, 1] * 12)
    images[y == 1, :, 8:20, 8:20] += 0.5  # a bright square: a linearly visible class
    feats = extract_features(backbone, images.clamp(0, 1), tiny_cfg)
    probe = fit_linear_head(feats[:16], y[:16], feats[16:], y[16:], epochs=50, lr=1e-2)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model = Classifier(backbone)
    model.head[1].load_state_dict(probe.head.state_dict())
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(images.clamp(0, 1)).squeeze(1)).numpy()
    np.testing.assert_allclose(direct, head_probabilities(probe.head, feats), atol=1e-4)
    assert probe.best_val_auc == pytest.approx(probe.history["val_auc"].max())


def _sweep_cfg(cfg, **finetune):
    finetune = {"tasks": ("abnormal",), **finetune}
    return replace(cfg, finetune=replace(cfg.finetune, inits=("random",), protocols=("linear", "full"),
                                         label_fractions=(0.5, 1.0), **finetune))


def test_sweep_writes_one_row_set_and_folder_per_run_beside_the_headline(tiny_cfg):
    cfg = _sweep_cfg(tiny_cfg)
    run_prepare(cfg, workers=1)
    out = run_finetune(cfg)
    pred = pd.read_csv(out / "predictions.csv")
    for column in ("image_id", "patient_id", "split", "fold", "label", "probability", "init", "protocol",
                   "label_fraction", "headline", "run"):
        assert column in pred
    runs = pred.groupby(["run", "protocol", "label_fraction", "headline"]).size().reset_index()
    assert set(runs.run) == {"random", "random-linear-f0.5", "random-linear-f1", "random-full-f0.5"}
    head = pred[pred.headline]
    assert set(head.run) == {"random"} and set(head.protocol) == {"full"} and set(head.label_fraction) == {1.0}
    assert head.sweep.all()  # full at 100% is the headline run itself, not trained twice
    n_eval = len(head)
    assert pred.groupby("run").size().eq(n_eval).all()  # every run predicts the same val and test images
    for name in ("random-linear-f0.5", "random-linear-f1", "random-full-f0.5"):
        assert (out / name / "predictions.csv").exists() and (out / name / "config.json").exists()
    assert (out / "random-full-f0.5" / "model.pt").exists() and (out / "random-linear-f0.5" / "head.pt").exists()
    assert (out / "random" / "model.pt").exists()
    sweep = pd.read_csv(out / "sweep.csv").set_index("run")
    half, whole = sweep.loc["random-linear-f0.5"], sweep.loc["random-linear-f1"]
    assert half.n_train_patients < whole.n_train_patients
    assert not (out / "cv_predictions.csv").exists()


def test_cross_validation_predicts_each_patient_once_from_a_model_that_never_saw_it(tiny_cfg):
    # Both tasks: the other task's headline run and folds go to <init>-<task>[-cv<k>]/.
    cfg = replace(_sweep_cfg(tiny_cfg, cv=True, tasks=("abnormal", "malignant")),
                  split=replace(tiny_cfg.split, n_folds=3))
    cfg = replace(cfg, finetune=replace(cfg.finetune, protocols=()))  # the sweep is tested above
    index = pd.read_csv(run_prepare(cfg, workers=1) / "preprocessed.csv", keep_default_na=False)
    out = run_finetune(cfg)
    cv = pd.read_csv(out / "cv_predictions.csv")
    assert set(cv.task) == {"abnormal", "malignant"}
    for task, prefix in (("abnormal", "random"), ("malignant", "random-malignant")):
        rows = cv[cv.task == task]
        test = rows[rows.split == "test"]
        assert sorted(test.image_id) == sorted(index.image_id)  # every image tested exactly once
        assert (test.fold == test.cv_fold).all()
        assert (test.label.to_numpy() == index.set_index("image_id").loc[test.image_id, task].to_numpy()).all()
        for k, fold in rows.groupby("cv_fold"):
            val_patients = set(fold.loc[fold.split == "val", "patient_id"])
            assert val_patients.isdisjoint(fold.loc[fold.split == "test", "patient_id"])
            train = cross_validation_split(index, k, 3)
            train_patients = set(train.loc[train.split == "train", "patient_id"])
            assert train_patients.isdisjoint(fold.patient_id)
            assert (out / f"{prefix}-cv{k}" / "model.pt").exists()
            assert not (out / f"{prefix}-cv{k}" / "checkpoints").exists()  # model.pt is the checkpoint
    pred = pd.read_csv(out / "predictions.csv")
    assert not pred.get("cv_fold", pd.Series(dtype=float)).notna().any()
    head = pred[pred.headline]
    assert set(zip(head.task, head.run, strict=True)) == {("abnormal", "random"), ("malignant", "random-malignant")}
    assert (out / "random-malignant" / "model.pt").exists()

    metrics = json.loads((run_evaluate(cfg) / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["abnormal", "malignant"]
    assert metrics["tasks"]["abnormal"]["models"] == metrics["models"]  # the main task, as before
    for task, entry in metrics["tasks"].items():
        test = head[(head.task == task) & (head.split == "test")]
        assert entry["models"]["random"]["n_test_images"] == len(test)
        assert entry["all_negative_accuracy"] == pytest.approx((test.label == 0).mean())
        assert entry["cross_validation"]["random"]["each_patient_tested_once"]
        pooled = cv[(cv.task == task) & (cv.split == "test")]
        assert entry["cross_validation"]["random"]["all_negative_accuracy"] == pytest.approx((pooled.label == 0).mean())
    table = claim_table(metrics)
    assert "| malignant | random init | held-out test" in table and "| malignant | random init | 3-fold CV" in table
    assert "0.967" in table


def test_full_fractions_narrow_only_the_full_protocol_and_the_headline_is_one_cell(tiny_cfg):
    from mammo_utils.label_efficiency import fractions_for, includes_headline, is_headline_cell

    cfg = replace(tiny_cfg, finetune=replace(tiny_cfg.finetune, label_fractions=(0.1, 0.5, 1.0),
                                             full_fractions=(0.1, 1.0)))
    assert fractions_for(cfg, "linear") == (0.1, 0.5, 1.0) and fractions_for(cfg, "full") == (0.1, 1.0)
    assert includes_headline(cfg) and is_headline_cell(cfg, "full", 1.0)
    assert not is_headline_cell(cfg, "linear", 1.0) and not is_headline_cell(cfg, "full", 0.1)
    longer = replace(cfg, finetune=replace(cfg.finetune, sweep_epochs=cfg.finetune.epochs + 1))
    assert not includes_headline(longer)  # another recipe: the 100% cell is trained again
