"""Stage 03's whole-film classifiers: the headline runs stages 04 and 05 report and explain.

For each initialisation and each task of ``finetune.tasks``, the recipe ``finetune.classifier`` (full fine-tuning,
or a linear probe on frozen features) on ``finetune.label_fraction`` of the training women, tested on the manifest's
held-out women; and where the run cross-validates (:func:`~mammo_utils.prepare.split.uses_cross_validation`), the
same recipe on every fold: fold k tests, fold k + 1 chooses the weights and the threshold, the others train, and a
self-supervised initialisation is the backbone pretrained on that fold's training women only. The test films are
only predicted, after the weights are chosen on validation.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch

from mammo_utils.config import Config
from mammo_utils.finetune.backbones import BackboneCache
from mammo_utils.finetune.full import FitResult, film_images, fit_full, steps_per_epoch
from mammo_utils.finetune.linear import fit_linear, head_probabilities
from mammo_utils.models import predict, save_classifier
from mammo_utils.prepare.loaders import CachedImages
from mammo_utils.prepare.split import cross_validation_split, subsample_patients, uses_cross_validation
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_json, atomic_write_text
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import seed_everything


@dataclass(frozen=True)
class FitSpec:
    """One film run of the stage.

    Attributes:
        run: its folder's name. init: the initialisation. task: ``abnormal`` or ``malignant``.
        classifier: ``full`` or ``linear``. label_fraction: of the training women. seed: of the run.
        role: ``headline`` or ``cv``. cv_fold: the tested fold (cv runs only).
    """

    run: str
    init: str
    task: str
    classifier: str
    label_fraction: float
    seed: int
    role: str
    cv_fold: int | None = None


def plan_runs(cfg: Config) -> list[FitSpec]:
    """Every film run of the stage, in the order it trains them (initialisation by initialisation)."""
    f = cfg.finetune
    specs = []
    for init in f.inits:
        for task in cfg.all_tasks():
            name = init if task == cfg.task else f"{init}-{task}"
            specs.append(FitSpec(name, init, task, f.classifier, f.label_fraction, cfg.seed, "headline"))
        if uses_cross_validation(cfg):
            for task in cfg.all_tasks():
                name = init if task == cfg.task else f"{init}-{task}"
                specs += [FitSpec(f"{name}-cv{k}", init, task, f.classifier, f.label_fraction, cfg.seed, "cv", k)
                          for k in range(cfg.split.n_folds)]
    return specs


def run_data(cfg: Config, index: pd.DataFrame, spec: FitSpec) -> tuple[pd.DataFrame, ...]:
    """The labelled training films, the validation and the test films of a run."""
    if spec.cv_fold is not None:
        index = cross_validation_split(index, spec.cv_fold, cfg.split.n_folds)
    train = subsample_patients(index[index.split == "train"], spec.label_fraction, spec.seed)
    return train, index[index.split == "val"], index[index.split == "test"]


def planned_steps(cfg: Config, spec: FitSpec, n_train: int) -> int:
    """Optimisation steps of a run: ``finetune.epochs`` passes over the labelled films (a linear probe's
    full-batch epochs)."""
    f = cfg.finetune
    if spec.classifier == "linear":
        return f.linear_epochs
    return f.epochs * steps_per_epoch(n_train, min(f.batch_size, n_train), f.limit_batches)


def fit_run(cfg: Config, spec: FitSpec, backbone: torch.nn.Module, train: pd.DataFrame, val: pd.DataFrame,
            steps: int, features: dict | None = None) -> FitResult:
    """Fit one run's classifier from ``backbone`` for ``steps`` steps (see :func:`planned_steps`)."""
    cfg = cfg.for_task(spec.task)
    seed_everything(spec.seed)
    if spec.classifier == "linear":
        return fit_linear(cfg, backbone, features, train, val, spec.seed)
    # A pretrained backbone may move slower than the new head so that fine-tuning keeps its features
    # (finetune.backbone_lr_factor); a random backbone has nothing to keep and trains at the head's rate.
    factor = 1.0 if spec.init == "random" else cfg.finetune.backbone_lr_factor
    return fit_full(cfg, backbone, film_images(train, cfg, augment=True), film_images(val, cfg), steps,
                    n_checks=cfg.finetune.epochs, seed=spec.seed, backbone_lr_factor=factor)


def prediction_rows(part: pd.DataFrame, split: str, probability: np.ndarray, task: str, **columns) -> pd.DataFrame:
    """The rows ``predictions.csv`` holds for the films of ``part``: ids, split, fold, label, probability, and the
    run's own ``columns`` (init, classifier, label_fraction, seed, run, ...)."""
    return pd.DataFrame({
        "image_id": part.image_id.values, "patient_id": part.patient_id.values, "split": split,
        "fold": part.fold.values, "label": part[task].values.astype(int), "probability": probability,
        "task": task, **columns,
    })


def _probabilities(result: FitResult, part: pd.DataFrame, task: str, features: dict | None, cfg: Config):
    """The fitted classifier's probabilities for the films of ``part``. A linear probe's backbone is frozen, so its
    features are those the probe trained on: the head is applied to them instead of running the films again."""
    if features is not None:
        return head_probabilities(result.model.head.eval(), torch.stack([features[i] for i in part.image_id]))
    return predict(result.model, CachedImages(part, task).images, placement(cfg))


def run_one(cfg: Config, index: pd.DataFrame, spec: FitSpec, backbones: BackboneCache,
            run: StageRun) -> tuple[pd.DataFrame, dict]:
    """Fit, predict and write one run (or read it back when it already finished with the same settings)."""
    folder = run.folder / spec.run
    if run.part_done(folder, ["predictions.csv", "record.json"]):
        return (pd.read_csv(folder / "predictions.csv", keep_default_na=False),
                json.loads((folder / "record.json").read_text()))
    start = time.perf_counter()
    index = index.assign(image_id=index.image_id.astype(str))
    train, val, test = run_data(cfg, index, spec)
    features = (backbones.film_features(spec.init, spec.cv_fold, spec.seed, index)
                if spec.classifier == "linear" else None)
    result = fit_run(cfg, spec, backbones.backbone(spec.init, spec.cv_fold, spec.seed), train, val,
                     planned_steps(cfg, spec, len(train)), features)
    columns = {"init": spec.init, "classifier": spec.classifier, "label_fraction": spec.label_fraction,
               "seed": spec.seed, "run": spec.run, "headline": spec.role == "headline"}
    if spec.cv_fold is not None:
        columns["cv_fold"] = spec.cv_fold
    rows = pd.concat([prediction_rows(part, split, _probabilities(result, part, spec.task, features, cfg),
                                      spec.task, **columns) for split, part in (("val", val), ("test", test))],
                     ignore_index=True)
    record = {**asdict(spec), "n_train_patients": int(train.patient_id.nunique()), "n_train_images": len(train),
              "n_train_positive": int(train[spec.task].sum()), "steps": result.steps, "best_step": result.best_step,
              "best_val_auc": result.best_val_auc, "seconds": round(time.perf_counter() - start, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    if spec.role == "headline":  # the models stages 04 and 05 read; the folds keep their predictions only
        save_classifier(folder / "model.pt", result.model, meta={k: record[k] for k in (
            "init", "task", "classifier", "label_fraction", "seed")})
    atomic_write_text(folder / "history.csv", result.history.assign(run=spec.run, init=spec.init).to_csv(index=False))
    atomic_write_text(folder / "predictions.csv", rows.to_csv(index=False))
    atomic_write_json(folder / "record.json", record)
    run.mark_part_done(folder)
    return rows, record


def cost(cfg: Config, index: pd.DataFrame, spec: FitSpec) -> float:
    """A run's expected cost in optimisation steps, for the time-left estimate (a linear probe costs ~1)."""
    if spec.classifier == "linear":
        return 1.0
    return float(planned_steps(cfg, spec, len(run_data(cfg, index, spec)[0])))
