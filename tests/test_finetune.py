"""Stage 03: label fractions, the linear probe, the crop task (label efficiency) and cross-validation by woman."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from mammo_utils.evaluate.stage import run_evaluate
from mammo_utils.finetune.full import check_interval
from mammo_utils.finetune.linear import (
    extract_features,
    fit_linear_head,
    fit_linear_heads,
    head_probabilities,
)
from mammo_utils.finetune.stage import run_finetune
from mammo_utils.models import Classifier, make_backbone
from mammo_utils.prepare.split import (
    assign_splits,
    cross_validation_split,
    patient_strata,
    subsample_patients,
)
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.stage import run_pretrain
from mammo_utils.report import claim_table
from mammo_utils.runs.paths import run_dir


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


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_label_fractions_are_nested(seed):
    """10% of the women are among the 25%, who are among the 50%: a curve adds labels, it does not redraw."""
    images = _images(n_patients=97)
    women = [set(subsample_patients(images, f, seed).patient_id) for f in (0.1, 0.25, 0.5, 1.0)]
    assert all(a < b for a, b in zip(women, women[1:], strict=False))


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


def test_linear_probe_freezes_the_backbone_and_its_head_plugs_into_the_classifier(tiny_cfg):
    torch.manual_seed(0)
    backbone = make_backbone("resnet18", "random").train()
    before = {k: v.clone() for k, v in backbone.state_dict().items()}  # batch-norm statistics included
    images = torch.rand(24, 1, 32, 32)
    y = torch.tensor([0, 1] * 12)
    images[y == 1, :, 8:20, 8:20] += 0.5  # a bright square: a linearly visible class
    feats = extract_features(backbone, images.clamp(0, 1))
    assert not backbone.training and not any(p.requires_grad for p in backbone.parameters())
    bn = [m for m in backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bn and not any(m.training for m in bn)  # running statistics, not the batch's
    probe = fit_linear_head(feats[:16], y[:16], feats[16:], y[16:], epochs=50, lr=1e-2)
    after = backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    model = Classifier(backbone)
    model.head[1].load_state_dict(probe.head.state_dict())
    with torch.no_grad():
        direct = torch.sigmoid(model.eval()(images.clamp(0, 1)).squeeze(1)).numpy()
    np.testing.assert_allclose(direct, head_probabilities(probe.head, feats), atol=1e-4)
    assert probe.best_val_auc == pytest.approx(probe.history["val_auc"].max())


def test_probes_trained_side_by_side_are_the_probes_trained_one_by_one():
    """Each stacked probe keeps its own rows, standardisation, class weight, seed and best epoch."""
    g = torch.Generator().manual_seed(0)
    x = torch.relu(torch.randn(300, 64, generator=g)) * torch.linspace(0.1, 10, 64) + torch.linspace(0, 50, 64)
    y = ((x[:, 0] - x[:, 0].mean()) / x[:, 0].std() + torch.randn(300, generator=g) > 0.5).long()
    val_x = torch.relu(torch.randn(80, 64, generator=g)) * torch.linspace(0.1, 10, 64) + torch.linspace(0, 50, 64)
    val_y = ((val_x[:, 0] - x[:, 0].mean()) / x[:, 0].std() + torch.randn(80, generator=g) > 0.5).long()
    fits = torch.stack([torch.ones(300, dtype=torch.bool)] + [torch.rand(300, generator=g) < f for f in (0.1, 0.1, 0.3)])
    seeds = [0, 1, 2, 3]
    together = fit_linear_heads(x, y, fits, val_x, val_y, epochs=60, seeds=seeds)
    for fit, seed, probe in zip(fits, seeds, together, strict=True):
        alone = fit_linear_head(x[fit], y[fit], val_x, val_y, epochs=60, seed=seed)
        assert probe.best_epoch == alone.best_epoch
        np.testing.assert_allclose(probe.history.val_auc, alone.history.val_auc, atol=1e-9)
        np.testing.assert_allclose(probe.history.train_loss, alone.history.train_loss, rtol=1e-4)
        np.testing.assert_allclose(head_probabilities(probe.head, val_x), head_probabilities(alone.head, val_x),
                                   atol=1e-4)
    assert len({p.best_epoch for p in together}) > 1  # the probes did not all stop alike


def _crop_cfg(cfg, **finetune):
    finetune = {"tasks": ("abnormal",), "inits": ("random",), "classifiers": ("linear", "full"),
                "label_fractions": (0.5, 1.0), **finetune}
    return replace(cfg, finetune=replace(cfg.finetune, **finetune))


def test_the_crop_task_runs_every_classifier_fraction_and_draw_on_nested_women(tiny_cfg):
    cfg = _crop_cfg(tiny_cfg, draws=2, full_fractions=(0.5, 1.0), full_draws=1, crop_steps=3)
    run_prepare(cfg, workers=1)
    crops = pd.read_csv(run_dir(cfg) / "01_prepare" / "crops.csv")
    out = run_finetune(cfg)
    pred = pd.read_csv(out / "crop_predictions.csv")
    linear = pred[pred.classifier == "linear"]
    assert set(linear.init) == {"random", "pixels", "mean_sd", "mean", "sd"}  # the network and the baselines
    assert set(pred[pred.classifier == "full"].init) == {"random"}
    points = pred.groupby(["init", "classifier", "label_fraction"]).draw.unique()
    assert sorted(points[("random", "linear", 0.5)]) == [0, 1] and list(points[("random", "linear", 1.0)]) == [0]
    assert list(points[("random", "full", 0.5)]) == [0]
    for _, rows in pred.groupby(["init", "classifier", "label_fraction", "draw"]):
        for split in ("val", "test"):  # every crop of the split's women, once, with its own label
            part = rows[rows.split == split].set_index("crop_id")
            truth = crops[crops.split == split].set_index("crop_id")
            assert sorted(part.index) == sorted(truth.index) and (part.label == truth.label.loc[part.index]).all()
    assert pred.probability.between(0, 1).all()
    # The labelled women are nested (a draw's 50% among all of them) and only the training women's.
    from mammo_utils.prepare.crops import labelled_women

    train = (crops.split == "train").to_numpy()
    half = labelled_women(crops, train, 0.5, 0)
    assert half.sum() < train.sum() and not (half & ~train).any()
    assert crops[half].groupby("patient_id").size().eq(crops[train].groupby("patient_id").size()
                                                       .loc[crops[half].patient_id.unique()]).all()
    films = pd.read_csv(out / "film_predictions.csv")
    index = pd.read_csv(run_dir(cfg) / "01_prepare" / "preprocessed.csv")
    assert set(films.image_id) == set(index.image_id[index.split.isin(["val", "test"])])  # every film, once
    assert films.groupby("image_id").size().eq(1).all() and set(films.init) == {"random"}
    rerun = (out / "crops" / "heldout" / "stage.json").stat().st_mtime_ns
    run_finetune(cfg, force=True)  # a finished split is not trained again, even when the stage is re-run
    assert (out / "crops" / "heldout" / "stage.json").stat().st_mtime_ns == rerun


class _PretrainingSpy(pl.Callback):
    """Records the films each pretraining run's training loader holds."""

    def __init__(self):
        self.seen: dict[str, set] = {}

    def on_train_start(self, trainer, module):
        self.seen[Path(trainer.default_root_dir).name] = set(trainer.train_dataloader.dataset.image_ids)


def test_cross_validation_tests_each_woman_once_with_models_that_never_saw_her(tiny_cfg):
    # Both tasks, and the self-supervised init: its backbone must be pretrained per fold.
    cfg = replace(_crop_cfg(tiny_cfg, cv=True, tasks=("abnormal", "malignant"), inits=("simclr", "random"),
                            classifiers=()), split=replace(tiny_cfg.split, n_folds=3))
    index = pd.read_csv(run_prepare(cfg, workers=1) / "preprocessed.csv", keep_default_na=False)
    spy = _PretrainingSpy()
    pre = run_pretrain(cfg, callbacks=[spy])
    fold_of = dict(zip(index.image_id, index.fold, strict=True))  # the manifest's own column, not re-derived
    assert set(spy.seen) == {"02_pretrain", "cv0", "cv1", "cv2"}
    for k in range(3):
        assert (pre / f"cv{k}" / "backbone.pt").exists()
        seen_folds = {fold_of[i] for i in spy.seen[f"cv{k}"]}
        assert seen_folds == {0, 1, 2} - {k, (k + 1) % 3}  # no film of the tested or the validation fold
    assert {fold_of[i] for i in spy.seen["02_pretrain"]} == {0, 1, 2}
    assert set(spy.seen["02_pretrain"]) == set(index.image_id[index.split == "train"])

    out = run_finetune(cfg)
    cv = pd.read_csv(out / "cv_predictions.csv")
    assert set(cv.task) == {"abnormal", "malignant"} and set(cv.init) == {"simclr", "random"}
    runs = pd.read_csv(out / "runs.csv")
    for (task, init), rows in cv.groupby(["task", "init"]):
        test = rows[rows.split == "test"]
        assert test.image_id.value_counts().eq(1).all() and set(test.image_id) == set(index.image_id)
        assert all(fold_of[i] == k for i, k in zip(test.image_id, test.cv_fold, strict=True))
        assert (test.label.to_numpy() == index.set_index("image_id").loc[test.image_id, task].to_numpy()).all()
        for k, fold in rows.groupby("cv_fold"):
            assert {fold_of[i] for i in fold.image_id[fold.split == "val"]} == {(k + 1) % 3}
            record = runs[(runs.role == "cv") & (runs.task == task) & (runs.init == init) & (runs.cv_fold == k)]
            trained_on = index[~index.fold.isin([k, (k + 1) % 3])]
            assert int(record.n_train_images.iloc[0]) == len(trained_on)
    pred = pd.read_csv(out / "predictions.csv")
    assert "cv_fold" not in pred or not pred.cv_fold.notna().any()
    head = pred[pred.headline]
    assert set(zip(head.task, head.run, strict=True)) == {
        ("abnormal", "random"), ("malignant", "random-malignant"), ("abnormal", "simclr"),
        ("malignant", "simclr-malignant")}

    metrics = json.loads((run_evaluate(cfg) / "metrics.json").read_text())
    assert list(metrics["tasks"]) == ["abnormal", "malignant"]
    assert metrics["tasks"]["abnormal"]["models"] == metrics["models"]  # the main task, as before
    for task, entry in metrics["tasks"].items():
        test = head[(head.task == task) & (head.split == "test") & (head.init == "random")]
        assert entry["models"]["random"]["n_test_images"] == len(test)
        assert entry["all_negative_accuracy"] == pytest.approx((test.label == 0).mean())
        pooled = cv[(cv.task == task) & (cv.split == "test") & (cv.init == "random")]
        assert entry["cross_validation"]["random"]["all_negative_accuracy"] == pytest.approx((pooled.label == 0).mean())
    table = claim_table(metrics)
    assert "| malignant | random init | held-out test" in table and "| malignant | simclr init | 3-fold CV" in table
    assert "0.967" in table


@pytest.mark.parametrize("steps", [1, 5, 12, 16, 20, 42, 60])
@pytest.mark.parametrize("n_checks", [1, 4, 5, 6])
def test_a_run_validates_at_most_n_checks_times_and_at_its_end(steps, n_checks):
    interval = check_interval(steps, n_checks)
    checks = set(range(interval, steps + 1, interval)) | {steps}  # Lightning's, then fit_full's at the end
    assert len(checks) <= n_checks and max(checks) == steps
    if steps % n_checks == 0:  # one check per epoch of a headline run: exactly the epochs
        assert len(checks) == n_checks


class _Brightest(torch.nn.Module):
    """A 'classifier' whose logit is 20 times a crop's mean grey level plus 15: every logit lies past 17, where a
    float32 sigmoid gives exactly 1."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * x.mean(dim=(1, 2, 3))[:, None] + 15


def test_film_scores_rank_films_whose_crops_all_saturate(tiny_cfg):
    """A film's score is its highest crop's, taken on the logits: two films that a float32 sigmoid would both call
    1.0 keep their order, so a confident model's films can still be ranked."""
    from mammo_utils.finetune.crops import film_scores

    size = tiny_cfg.crops.size_px
    films = {name: np.full((4 * size, 4 * size), grey, np.float32) for name, grey in (("dim", 0.3), ("bright", 0.6))}
    films["bright"][:size, :size] = 0.9  # one brighter crop: the film's maximum (logit 33)
    logits = 20 * np.array([0.3, 0.9]) + 15
    assert (torch.sigmoid(torch.tensor(logits, dtype=torch.float32)) == 1.0).all()  # float32 would tie them
    scores = film_scores(_Brightest(), films, ["dim", "bright"], tiny_cfg)
    assert scores.dtype == np.float64 and scores[1] > scores[0]
    np.testing.assert_allclose(np.log(scores) - np.log1p(-scores), logits, atol=0.05)  # the highest crops' logits
