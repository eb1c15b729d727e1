"""Checks of notebook 03's exercises (fine-tuning), and the small helper its ablation exercise uses.

Each check compares the learner's answer with the package's own implementation: :func:`~mammo_utils.finetune.linear.
freeze_backbone`, :func:`~mammo_utils.finetune.loss.positive_class_weight`, a reference optimisation step taken with the
same PyTorch objects, and :func:`~mammo_utils.prepare.split.subsample_patients`.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from mammo_utils.course import _NotYet, check

# ---------------------------------------------------------------------------------------------------------------
# 3.1 The class weight


@check("3.1 Class weight", hint="The weight of a positive is what makes all the positives weigh as much, together, "
       "as all the negatives: the rarer the positives, the larger their weight.",
       recipe="Count the positives and the negatives among the training labels (np.asarray(labels).sum() and the "
       "rest) and return negatives / positives as a float.")
def check_positive_class_weight(fn: Callable) -> str:
    """Compare ``fn(labels)`` with :func:`~mammo_utils.finetune.loss.positive_class_weight` on label arrays of several
    types (numpy, torch, pandas) and balances."""
    from mammo_utils.finetune.loss import positive_class_weight

    rng = np.random.default_rng(0)
    cases = [np.array([0, 0, 0, 1]), np.array([1, 1, 0]), np.array([0, 1])]
    cases += [(rng.random(n) < p).astype(int) for n, p in ((50, 0.2), (200, 0.05), (31, 0.6))]
    cases = [c if c.sum() else np.r_[c, 1] for c in cases]
    for labels in cases:
        for kind, value in (("numpy", labels), ("torch", torch.tensor(labels)), ("pandas", pd.Series(labels))):
            got = fn(value)
            if got is None:
                raise NotImplementedError
            expected = positive_class_weight(labels)
            n_pos, n_neg = int(labels.sum()), int(len(labels) - labels.sum())
            got = float(got)
            assert np.isclose(got, expected, rtol=1e-6), (
                f"for {n_pos} positives and {n_neg} negatives ({kind} labels) you returned {got:.4g}, the package "
                f"{expected:.4g}" + _weight_diagnosis(got, n_pos, n_neg))
    return (f"matches positive_class_weight on {len(cases)} label sets (numpy, torch and pandas): with it, "
            "answering 'negative' everywhere no longer pays.")


def _weight_diagnosis(got: float, n_pos: int, n_neg: int) -> str:
    if np.isclose(got, n_pos / max(n_neg, 1)):
        return " (that is positives / negatives: upside down, it makes the rare class count even less)"
    if np.isclose(got, n_pos / (n_pos + n_neg)):
        return " (that is positives / all images, the prevalence: a weight below 1 shrinks the rare class further)"
    if np.isclose(got, n_neg / (n_pos + n_neg)):
        return " (that is negatives / all images: close, but it is the ratio to the positives that balances them)"
    return ""


# ---------------------------------------------------------------------------------------------------------------
# 3.2 Freezing the backbone


def _bn_layers(module: nn.Module) -> list[tuple[str, nn.modules.batchnorm._BatchNorm]]:
    return [(n, m) for n, m in module.named_modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _running_means(module: nn.Module) -> dict[str, torch.Tensor]:
    return {n: m.running_mean.clone() for n, m in _bn_layers(module)}


@check("3.2 Freeze the backbone", hint="Two things change a network during training: the optimiser moves its "
       "weights, and every batch-norm layer updates its running statistics at each forward pass in train mode. "
       "Freezing stops both.",
       recipe="Set requires_grad to False on every parameter (backbone.requires_grad_(False)) and put the backbone "
       "in eval mode (backbone.eval(), which reaches every batch-norm layer); return the backbone.")
def check_freeze(fn: Callable[[nn.Module], nn.Module]) -> str:
    """Freeze a random one-channel ResNet-50 (in train mode) with ``fn`` and with the package's
    :func:`~mammo_utils.finetune.linear.freeze_backbone`; both must leave no trainable weight, every batch norm in
    eval mode, running statistics that do not drift over forward passes, and the same features."""
    from mammo_utils.finetune.linear import freeze_backbone
    from mammo_utils.models import make_backbone, normalize

    torch.manual_seed(0)
    backbone = make_backbone("resnet18", "random").train()
    reference = freeze_backbone(copy.deepcopy(backbone))
    got = fn(backbone)
    if got is None:  # an in-place answer that forgot to return is still judged on the module it changed
        got = backbone
    trainable = sum(p.numel() for p in got.parameters() if p.requires_grad)
    assert trainable == 0, (f"{trainable:,} weights still require a gradient: the optimiser (and autograd) would "
                            "still change the backbone")
    before = _running_means(got)
    x = normalize(torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.5)
    for _ in range(2):  # feature extraction runs forward passes: a frozen backbone must come out unchanged
        with torch.no_grad():
            feats = got(x)
    drift = {n: float((m - before[n]).abs().max()) for n, m in _running_means(got).items()}
    in_train = [n for n, m in _bn_layers(got) if m.training]
    assert not in_train, (
        f"{len(in_train)} batch-norm layers are still in train mode (e.g. {in_train[0]!r}); after two forward "
        f"passes their running means drifted by up to {max(drift.values()):.3g} (layer {max(drift, key=drift.get)!r}), "
        "so the features of one image would change with the batch it comes in and from one epoch to the next")
    assert max(drift.values(), default=0.0) == 0.0, "the batch-norm running statistics changed in a forward pass"
    with torch.no_grad():
        expected = reference(x)
    assert torch.allclose(feats, expected, atol=1e-5), (
        "your frozen backbone computes different features from freeze_backbone's on the same images")
    return (f"no weight requires a gradient, all {len(_bn_layers(got))} batch-norm layers normalise with their "
            "stored statistics (no drift), and the features equal linear_probe.freeze_backbone's.")


# ---------------------------------------------------------------------------------------------------------------
# 3.3 One training step


def _tiny_classifier(seed: int) -> nn.Module:
    """A small convolutional network with batch norm and one logit, shaped like the Classifier (B, 1)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), nn.Linear(8, 1)).train()


def _plant_stale_gradients(model: nn.Module) -> None:
    # Gradients left over from an earlier step: a training step that does not clear them adds them in.
    for p in model.parameters():
        p.grad = torch.full_like(p, 3.0)


@check("3.3 One training step", hint="A step clears what earlier steps left in the gradients, computes this "
       "batch's loss, turns it into gradients and moves the weights; it reports the loss the weights were judged "
       "on, before they moved.",
       recipe="optimizer.zero_grad(); loss = loss_fn(model(x).squeeze(1), y.float()); loss.backward(); "
       "optimizer.step(); return loss.item().")
def check_training_step(fn: Callable, trials: int = 3) -> str:
    """Run ``fn(model, optimizer, x, y, loss_fn)`` on a small batch-norm network whose parameters hold stale
    gradients, and compare the weights it leaves with those of a reference step (zero_grad, loss, backward, step)
    taken from an identical copy; the loss on the batch must fall."""
    from mammo_utils.finetune.loss import weighted_bce

    drops = []
    for trial in range(trials):
        gen = torch.Generator().manual_seed(trial)
        x = torch.rand(8, 1, 16, 16, generator=gen)
        y = torch.tensor([0, 0, 0, 0, 0, 1, 1, 0])[torch.randperm(8, generator=gen)]
        x[y == 1, :, 4:10, 4:10] += 0.5
        loss_fn = weighted_bce(y)
        model, ref = _tiny_classifier(trial), _tiny_classifier(trial)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        ref_opt = torch.optim.SGD(ref.parameters(), lr=0.1)
        _plant_stale_gradients(model), _plant_stale_gradients(ref)
        start = {k: v.clone() for k, v in model.state_dict().items()}
        ref_opt.zero_grad()
        ref_loss = loss_fn(ref(x).squeeze(1), y.float())
        ref_loss.backward()
        ref_loss = float(ref_loss.detach())
        ref_opt.step()
        got = fn(model, opt, x.clone(), y.clone(), loss_fn)
        if got is None:
            raise NotImplementedError
        got = float(got.detach() if isinstance(got, torch.Tensor) else got)
        params = dict(model.named_parameters())
        unchanged = all(torch.equal(params[k], start[k]) for k in params)
        assert not unchanged, "the weights did not change: did you call optimizer.step() after loss.backward()?"
        same = all(torch.allclose(params[k], p, atol=1e-6) for k, p in ref.named_parameters())
        if not same:
            assert not _stale_step_matches(model, start, x, y, loss_fn), (
                "your step used the gradients left over from an earlier step (the check planted some) added to "
                "this batch's: call optimizer.zero_grad() before loss.backward()")
            raise AssertionError("your weights after the step differ from those of zero_grad, loss, backward, "
                                 "step on the same batch")
        with torch.no_grad():
            after = float(loss_fn(ref(x).squeeze(1), y.float()))
        if abs(got - ref_loss) > 1e-5:
            assert abs(got - after) > 1e-5, "you returned the loss after the step; return the one computed before it"
            raise AssertionError(f"you returned {got:.4f}; the loss on the batch before the step is "
                                 f"{ref_loss:.4f}")
        drops.append((ref_loss, after))
    text = ", ".join(f"{b:.3f} -> {a:.3f}" for b, a in drops)
    return f"your step matches zero_grad, loss, backward, step exactly, and the loss on each batch falls ({text})."


def _stale_step_matches(model: nn.Module, start: dict, x: torch.Tensor, y: torch.Tensor, loss_fn: nn.Module) -> bool:
    """Whether ``model``'s weights are those of a step that kept the planted gradients (forgot zero_grad)."""
    twin = _tiny_classifier(0)
    twin.load_state_dict(start)
    opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    _plant_stale_gradients(twin)
    loss_fn(twin(x).squeeze(1), y.float()).backward()
    opt.step()
    return all(torch.allclose(p, dict(model.named_parameters())[k], atol=1e-6) for k, p in twin.named_parameters())


# ---------------------------------------------------------------------------------------------------------------
# 3.4 Nested label fractions


def _women_table(n_women: int, seed: int) -> pd.DataFrame:
    """A manifest-like table: women with 2-4 films each and worst labels normal / benign / malignant (60/30/10%)."""
    rng = np.random.default_rng(seed)
    rows = []
    for w in range(n_women):
        stratum = rng.choice(3, p=[0.6, 0.3, 0.1])
        for v in range(int(rng.integers(2, 5))):
            abnormal = int(stratum > 0 and v == 0)
            rows.append({"image_id": f"W{w:03d}_{v}", "patient_id": f"W{w:03d}", "abnormal": abnormal,
                         "malignant": int(abnormal and stratum == 2)})
    return pd.DataFrame(rows)


@check("3.4 Nested label fractions", hint="Work on women, not films; keep every worst label in its share; and make "
       "the smaller sets parts of the larger ones, so that a point of the sweep differs from the next only by "
       "the labels added.",
       recipe="Find each woman's worst label (her stratum), shuffle each stratum's women ONCE with "
       "np.random.default_rng(seed), and let a fraction keep the first round(n x fraction) (at least one) of "
       "that one order; return {fraction: set of patient_id}.")
def check_label_subsets(fn: Callable, images: pd.DataFrame | None = None) -> str:
    """Call ``fn(images, fractions, seed)`` on generated tables (and on ``images`` when given) and check that the
    sets are women of the table, nested, and stratified within one woman of
    :func:`~mammo_utils.prepare.split.subsample_patients`'s count in every stratum."""
    from mammo_utils.prepare.split import patient_strata, subsample_patients

    fractions = (0.1, 0.25, 0.5, 1.0)
    tables = [(_women_table(120, s), s) for s in range(4)]
    if images is not None:
        tables.append((images, 0))
    for table, seed in tables:
        got = fn(table, fractions, seed)
        if got is None:
            raise NotImplementedError
        got = {float(f): set(map(str, women)) for f, women in dict(got).items()}
        assert set(got) == set(fractions), f"the keys should be the fractions {fractions}; you returned {sorted(got)}"
        women = set(table.patient_id.astype(str))
        images_ids = set(table.image_id.astype(str))
        for f in fractions:
            strangers = got[f] - women
            assert not (strangers & images_ids), (
                f"at {f:.0%} your set holds image ids ({sorted(strangers)[:2]}): keep women (patient_id), so that a "
                "woman's other films never land in the unlabelled rest")
            assert not strangers, (f"at {f:.0%} your set holds ids that are not women of the table: "
                                   f"{sorted(strangers)[:3]}")
        for small, large in zip(fractions, fractions[1:], strict=False):
            extra = got[small] - got[large]
            assert not extra, (
                f"not nested: {sorted(extra)[:3]} are among the {small:.0%} but not among the {large:.0%} "
                f"(seed {seed}); draw one order per stratum and take prefixes of it, not a new draw per fraction")
        strata = patient_strata(table)
        strata.index = strata.index.astype(str)
        for f in fractions:
            expected = patient_strata(subsample_patients(table, f, seed)).value_counts()
            counts = strata[sorted(got[f])].value_counts()
            for s, n in expected.items():
                assert abs(int(counts.get(s, 0)) - int(n)) <= 1, (
                    f"at {f:.0%} (seed {seed}) you kept {int(counts.get(s, 0))} women of stratum {s} "
                    f"({['normal', 'benign', 'malignant'][s]}), subsample_patients {n}: draw within each stratum "
                    "(the woman's worst label), so every fraction keeps the class balance")
    return (f"nested ({' ⊂ '.join(f'{f:.0%}' for f in fractions)}), by woman, and stratified within one woman of "
            f"subsample_patients on {len(tables)} tables.")


# ---------------------------------------------------------------------------------------------------------------
# 3.5 The label-fraction ablation


def share_earlier_stages(cfg, variant_cfg) -> None:
    """Copy stages 01 and 02 of the first run into a variant's run folder (once), so that the variant's stage 03
    fine-tunes from the same data and the same pretrained backbone: only the fine-tuning settings differ.
    (Lightning's checkpoints and logs are left behind: stage 03 reads ``preprocessed.csv`` and ``backbone.pt``.)"""
    from mammo_utils.runs.paths import require, stage_dir

    for stage, must_have in (("prepare", "preprocessed.csv"), ("pretrain", "backbone.pt")):
        source = require(cfg, stage, must_have).parent
        target = stage_dir(variant_cfg, stage, create=False)
        if not (target / "stage.json").exists():
            shutil.copytree(source, target, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("checkpoints", "logs", "tensorboard", "cv*"))


def _headline(cfg) -> pd.DataFrame | None:
    from mammo_utils.runs.paths import stage_dir

    path = stage_dir(cfg, "finetune", create=False) / "runs.csv"
    if not path.exists():
        return None
    runs = pd.read_csv(path)
    return runs[(runs.role == "headline") & (runs.task == cfg.task)].set_index("init")


@check("3.5 Label-fraction ablation", hint="An ablation changes ONE thing and keeps everything else, so that any "
       "difference is that thing's doing: here the share of labelled women of the headline runs.",
       recipe="Keep the variant as the exercise cell builds it: load_config(..., variant='lf0.25', "
       "overrides=['finetune.label_fraction=0.25', 'finetune.classifiers=', 'finetune.cv=false', "
       "'finetune.tasks=']), no other override; set RUN_ABLATION = True and run that cell again.")
def check_label_fraction_ablation(run_ablation: bool, cfg, variant_cfg) -> str:
    """NOT YET until the learner sets ``RUN_ABLATION`` and the variant's stage 03 has run (a variant left on disk
    by an earlier session does not count); the variant's configuration must differ from the first run's in
    ``finetune.label_fraction`` (smaller) and nothing else (the settings that only turn off the sweep, the
    cross-validation and the other tasks aside); then compare each initialisation's best validation ROC AUC at
    the variant's label fraction with the first run's."""
    from mammo_utils.course import require_one_change

    if not run_ablation:
        raise _NotYet("RUN_ABLATION is False: set it to True and run the cell below it (about a minute at demo).")
    assert variant_cfg.variant, "the variant's configuration has no variant name: it would overwrite the first run"
    # classifiers, cv and tasks only decide which runs besides the headline one stage 03 makes.
    change = require_one_change(cfg, variant_cfg, "finetune.label_fraction",
                                ("finetune.classifiers", "finetune.cv", "finetune.tasks"),
                                "overrides=['finetune.label_fraction=0.25']")
    first, variant = _headline(cfg), _headline(variant_cfg)
    if first is None:
        raise _NotYet("the first run's stage 03 has not run yet: run the full-stage cell above first.")
    if variant is None:
        raise _NotYet(f"the variant {variant_cfg.variant!r} has not run yet: set RUN_ABLATION = True and run the "
                      "cell below it (about a minute at demo).")
    fraction = variant_cfg.finetune.label_fraction
    assert fraction < cfg.finetune.label_fraction, (
        f"the variant's finetune.label_fraction is {fraction}, not below the first run's "
        f"{cfg.finetune.label_fraction}: pass overrides=['finetune.label_fraction=0.25']")
    assert np.allclose(variant.label_fraction, fraction), "the variant's runs.csv was written with another fraction"
    both = first[["n_train_patients", "steps", "best_val_auc"]].join(
        variant[["n_train_patients", "steps", "best_val_auc"]], rsuffix="_variant", how="inner")
    assert len(both), "the two runs share no initialisation"
    text = "; ".join(f"{init}: {r.best_val_auc:.3f} with {int(r.n_train_patients)} women -> "
                     f"{r.best_val_auc_variant:.3f} with {int(r.n_train_patients_variant)}"
                     for init, r in both.iterrows())
    return f"{change}. Validation ROC AUC at 100% -> {fraction:.0%} of the labelled women: {text}."
