"""Notebook 03's checks: each says PASS for the reference solution, NOT YET for the stub, FAIL (with a useful
hint) for the typical wrong answers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mammo_utils.course import finetune as checks
from mammo_utils.course.solutions import finetune as solutions


def _stub(*args, **kwargs):
    raise NotImplementedError


def _said(capsys) -> str:
    return capsys.readouterr().out.strip()


# 3.1 class weight ------------------------------------------------------------------------------------------------

def test_class_weight_passes_waits_and_fails(capsys):
    assert checks.check_positive_class_weight(solutions.my_positive_class_weight)
    assert _said(capsys).startswith("PASS (3.1")
    assert not checks.check_positive_class_weight(_stub)
    assert _said(capsys).startswith("NOT YET (3.1")


@pytest.mark.parametrize(("wrong", "diagnosis"), [
    (lambda y: np.asarray(y).sum() / (len(y) - np.asarray(y).sum()), "positives / negatives"),
    (lambda y: np.asarray(y).mean(), "prevalence"),
    (lambda y: 1.0, "the package"),
])
def test_class_weight_fails_upside_down_or_prevalence(capsys, wrong, diagnosis):
    assert not checks.check_positive_class_weight(wrong)
    said = _said(capsys)
    assert said.startswith("FAIL (3.1") and diagnosis in said and "Hint:" in said


# 3.2 freezing ------------------------------------------------------------------------------------------------------

def test_freeze_passes_and_waits(capsys):
    assert checks.check_freeze(solutions.my_freeze)
    assert _said(capsys).startswith("PASS (3.2")
    assert not checks.check_freeze(_stub)
    assert _said(capsys).startswith("NOT YET (3.2")


def test_freezing_the_weights_only_fails_and_shows_the_drift(capsys):
    def weights_only(backbone):
        for p in backbone.parameters():
            p.requires_grad_(False)
        return backbone  # batch norm left in train mode

    assert not checks.check_freeze(weights_only)
    said = _said(capsys)
    assert said.startswith("FAIL (3.2") and "train mode" in said and "drifted by up to" in said


def test_eval_mode_only_fails(capsys):
    assert not checks.check_freeze(lambda backbone: backbone.eval())
    said = _said(capsys)
    assert said.startswith("FAIL (3.2") and "require a gradient" in said


# 3.3 one training step -----------------------------------------------------------------------------------------------

def test_training_step_passes_and_waits(capsys):
    assert checks.check_training_step(solutions.my_training_step)
    said = _said(capsys)
    assert said.startswith("PASS (3.3") and "->" in said
    losses = [tuple(map(float, pair.split(" -> "))) for pair in said.split("(")[-1].rstrip(").").split(", ")]
    assert all(after < before for before, after in losses)  # one step lowers the loss on its batch
    assert not checks.check_training_step(_stub)
    assert _said(capsys).startswith("NOT YET (3.3")


def test_forgetting_zero_grad_fails(capsys):
    def no_zero_grad(model, optimizer, x, y, loss_fn):
        loss = loss_fn(model(x).squeeze(1), y.float())
        loss.backward()
        optimizer.step()
        return loss.item()

    assert not checks.check_training_step(no_zero_grad)
    said = _said(capsys)
    assert said.startswith("FAIL (3.3") and "zero_grad" in said and "left over" in said


def test_forgetting_the_step_or_returning_the_later_loss_fails(capsys):
    def no_step(model, optimizer, x, y, loss_fn):
        optimizer.zero_grad()
        loss = loss_fn(model(x).squeeze(1), y.float())
        loss.backward()
        return loss.item()

    def loss_after(model, optimizer, x, y, loss_fn):
        solutions.my_training_step(model, optimizer, x, y, loss_fn)
        return loss_fn(model(x).squeeze(1), y.float()).item()

    assert not checks.check_training_step(no_step)
    said = _said(capsys)
    assert said.startswith("FAIL (3.3") and "optimizer.step()" in said
    assert not checks.check_training_step(loss_after)
    said = _said(capsys)
    assert said.startswith("FAIL (3.3") and "after the step" in said


# 3.4 nested label fractions ------------------------------------------------------------------------------------------

def test_label_subsets_pass_and_wait(capsys):
    images = checks._women_table(40, seed=9)
    assert checks.check_label_subsets(solutions.my_label_subsets, images)
    assert _said(capsys).startswith("PASS (3.4")
    assert not checks.check_label_subsets(_stub)
    assert _said(capsys).startswith("NOT YET (3.4")


def test_a_new_draw_per_fraction_fails_as_not_nested(capsys):
    def redrawn(images, fractions, seed):
        return {f: set(solutions.my_label_subsets(images, [f], seed + int(100 * f))[f]) for f in fractions}

    assert not checks.check_label_subsets(redrawn)
    said = _said(capsys)
    assert said.startswith("FAIL (3.4") and "not nested" in said


def test_unstratified_or_by_image_subsets_fail(capsys):
    def unstratified(images, fractions, seed):
        women = np.random.default_rng(seed).permutation(sorted(images.patient_id.unique()))
        return {f: set(women[: round(len(women) * f)]) for f in fractions}

    def by_image(images, fractions, seed):
        ids = np.random.default_rng(seed).permutation(images.image_id.to_numpy())
        return {f: set(ids[: round(len(ids) * f)]) for f in fractions}

    assert not checks.check_label_subsets(unstratified)
    said = _said(capsys)
    assert said.startswith("FAIL (3.4") and "stratum" in said
    assert not checks.check_label_subsets(by_image)
    said = _said(capsys)
    assert said.startswith("FAIL (3.4") and "image ids" in said


# 3.5 the ablation -----------------------------------------------------------------------------------------------------

_TINY = ["synthetic.n_patients=12", "synthetic.size_px=96", "image_size_px=32", "pretrain.batch_size=8",
         "finetune.batch_size=8", "evaluate.bootstrap_resamples=50"]  # the settings of the tiny_cfg fixture


def _variant(tiny_cfg, *overrides: str):
    """A variant of the tiny_cfg fixture's run, named lf0.25, with ``overrides`` on top of its settings."""
    from mammo_utils.config import load_config

    return load_config("smoke", "synthetic", data_dir=tiny_cfg.data_dir, runs_dir=tiny_cfg.runs_dir,
                       variant="lf0.25", overrides=[*_TINY, *overrides], precision="32-true")


def _write_runs(cfg, fraction: float, auc: float) -> None:
    from mammo_utils.runs.paths import stage_dir

    runs = pd.DataFrame([{"run": init, "init": init, "task": cfg.task, "role": "headline", "label_fraction": fraction,
                          "n_train_patients": int(40 * fraction), "steps": 10, "best_val_auc": auc}
                         for init in ("simclr", "random")])
    runs.to_csv(stage_dir(cfg, "finetune") / "runs.csv", index=False)


def test_ablation_says_not_yet_until_the_variant_ran_then_compares(tiny_cfg, capsys):
    variant = _variant(tiny_cfg, "finetune.label_fraction=0.25")
    assert not checks.check_label_fraction_ablation(True, tiny_cfg, variant)
    assert _said(capsys).startswith("NOT YET (3.5")
    _write_runs(tiny_cfg, 1.0, 0.8)
    assert not checks.check_label_fraction_ablation(True, tiny_cfg, variant)
    assert "has not run yet" in _said(capsys)
    _write_runs(variant, 0.25, 0.7)
    assert checks.check_label_fraction_ablation(True, tiny_cfg, variant)
    said = _said(capsys)
    assert said.startswith("PASS (3.5") and "0.800 with 40 women -> 0.700 with 10" in said
    # A variant on disk from an earlier session is not this learner's answer while RUN_ABLATION is False.
    assert not checks.check_label_fraction_ablation(False, tiny_cfg, variant)
    assert _said(capsys).startswith("NOT YET (3.5")


def test_ablation_without_a_smaller_fraction_fails(tiny_cfg, capsys):
    same = _variant(tiny_cfg)  # the override forgotten
    _write_runs(tiny_cfg, 1.0, 0.8)
    _write_runs(same, 1.0, 0.8)
    assert not checks.check_label_fraction_ablation(True, tiny_cfg, same)
    said = _said(capsys)
    assert said.startswith("FAIL (3.5") and "finetune.label_fraction=0.25" in said


@pytest.mark.parametrize(("overrides", "says"), [
    (["finetune.epochs=2"], "changes finetune.label_fraction"),  # named lf0.25, but fewer epochs instead
    (["finetune.label_fraction=0.25", "finetune.epochs=2"], "also finetune.epochs"),  # labels and compute together
    (["finetune.label_fraction=0.25", "finetune.lr=0.01"], "also finetune.lr"),
    (["finetune.label_fraction=0.25", "finetune.inits=imagenet,random"], "cannot say which one"),
])
def test_an_ablation_that_changes_something_else_fails(tiny_cfg, capsys, overrides, says):
    """Whatever ran: the variant must differ from the first run in the label fraction, and only in it (the
    settings that turn off the sweep, the cross-validation and the other tasks aside)."""
    wrong = _variant(tiny_cfg, *overrides)
    _write_runs(tiny_cfg, 1.0, 0.8)
    _write_runs(wrong, wrong.finetune.label_fraction, 0.7)
    assert not checks.check_label_fraction_ablation(True, tiny_cfg, wrong)
    said = _said(capsys)
    assert said.startswith("FAIL (3.5") and says in said, said


def test_the_notebooks_variant_passes(tiny_cfg, capsys):
    """The variant as notebook 03's cell builds it: the fraction, and the settings that leave only the headline
    runs to train."""
    variant = _variant(tiny_cfg, "finetune.label_fraction=0.25", "finetune.classifiers=", "finetune.cv=false",
                       "finetune.tasks=")
    _write_runs(tiny_cfg, 1.0, 0.8)
    _write_runs(variant, 0.25, 0.7)
    assert checks.check_label_fraction_ablation(True, tiny_cfg, variant)
    assert "finetune.label_fraction: 1.0 -> 0.25" in _said(capsys)


def test_the_variant_shares_the_first_runs_data_and_backbone(tiny_cfg):
    from mammo_utils.runs.paths import stage_dir

    for stage, name in (("prepare", "preprocessed.csv"), ("pretrain", "backbone.pt")):
        folder = stage_dir(tiny_cfg, stage)
        (folder / name).write_text("x")
        (folder / "stage.json").write_text("{}")
    (stage_dir(tiny_cfg, "pretrain") / "checkpoints").mkdir()
    from dataclasses import replace

    variant = replace(tiny_cfg, variant="lf0.25")
    checks.share_earlier_stages(tiny_cfg, variant)
    assert (stage_dir(variant, "pretrain", create=False) / "backbone.pt").exists()
    assert (stage_dir(variant, "prepare", create=False) / "preprocessed.csv").exists()
    assert not (stage_dir(variant, "pretrain", create=False) / "checkpoints").exists()
