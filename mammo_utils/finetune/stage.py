"""Stage 03: fine-tune classifiers from each initialisation (self-supervised, random, ImageNet) on the labels.

The stage is a list of runs (:func:`plan_runs`), each fitted by the one path of :mod:`mammo_utils.finetune.full`:

- **headline**: per initialisation and task of ``finetune.tasks``, the recipe ``finetune.protocol`` at
  ``finetune.label_fraction`` on the manifest's split; stages 04 and 05 report and explain these.
- **sweep**: the label-efficiency experiment of the main task (:mod:`mammo_utils.finetune.sweep`).
- **cv**: with ``finetune.cv``, the headline recipe cross-validated by patient: fold k is tested, fold k+1
  chooses the weights and the threshold, the others train; a self-supervised initialisation is the backbone
  pretrained on that fold's training women only (stage 02 writes one per fold), so no test film of a fold has
  been seen, even without its label, by the model that is tested on it.

Each run writes ``03_finetune/<run>/`` (``predictions.csv``, ``record.json``, ``history.csv``; the headline
runs also ``model.pt``) and is skipped when it already finished with the same settings, so an interrupted stage
continues where it stopped. The test images are only predicted, after the weights are chosen on validation.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo_utils.config import Config
from mammo_utils.errors import MammoError
from mammo_utils.finetune import figures
from mammo_utils.finetune.full import FitResult, fit_full
from mammo_utils.finetune.linear import feature_table, fit_linear, head_probabilities
from mammo_utils.finetune.sweep import (
    fractions_for,
    headline_steps,
    run_name,
    sweep_seeds,
    sweep_steps,
    sweep_table,
)
from mammo_utils.models import load_backbone, predict, resnet50_backbone, save_classifier
from mammo_utils.prepare.loaders import CachedImages
from mammo_utils.prepare.split import cross_validation_split, subsample_patients, uses_cross_validation
from mammo_utils.prepare.stage import load_index
from mammo_utils.pretrain.methods import METHODS
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_json, atomic_write_text
from mammo_utils.runs.paths import how_to_run, require
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import Progress, seed_everything

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "augment", "finetune", "precision")


@dataclass(frozen=True)
class FitSpec:
    """One fine-tuning run of the stage.

    Attributes:
        run: its folder's name. init: the initialisation. task: ``abnormal`` or ``malignant``.
        protocol: ``full`` or ``linear``. label_fraction: of the training women. seed: of the run.
        role: ``headline``, ``sweep`` or ``cv``. cv_fold: the tested fold (cv runs only).
    """

    run: str
    init: str
    task: str
    protocol: str
    label_fraction: float
    seed: int
    role: str
    cv_fold: int | None = None


def plan_runs(cfg: Config) -> list[FitSpec]:
    """Every run of the stage, in the order it trains them (initialisation by initialisation)."""
    f = cfg.finetune
    specs = []
    for init in f.inits:
        for task in cfg.all_tasks():
            name = init if task == cfg.task else f"{init}-{task}"
            specs.append(FitSpec(name, init, task, f.protocol, f.label_fraction, cfg.seed, "headline"))
        for protocol in f.protocols:
            for fraction in fractions_for(cfg, protocol):
                for seed in sweep_seeds(cfg):
                    specs.append(FitSpec(run_name(init, protocol, fraction, seed), init, cfg.task, protocol,
                                         float(fraction), seed, "sweep"))
        if uses_cross_validation(cfg):
            for task in cfg.all_tasks():
                name = init if task == cfg.task else f"{init}-{task}"
                specs += [FitSpec(f"{name}-cv{k}", init, task, f.protocol, f.label_fraction, cfg.seed, "cv", k)
                          for k in range(cfg.split.n_folds)]
    return specs


def initial_backbone(cfg: Config, init: str, cv_fold: int | None = None) -> torch.nn.Module:
    """The backbone a run starts from: stage 02's for a self-supervised init (the fold's own in
    cross-validation), else ``random`` (seed it first) or ``imagenet``."""
    if init in METHODS:
        name = "backbone.pt" if cv_fold is None else f"cv{cv_fold}/backbone.pt"
        return load_backbone(require(cfg, "pretrain", name), hint=how_to_run(cfg, "pretrain"))
    return resnet50_backbone(init)


def run_data(cfg: Config, index: pd.DataFrame, spec: FitSpec) -> tuple[pd.DataFrame, ...]:
    """All the training rows, the labelled fraction of them, the validation and the test rows of a run."""
    if spec.cv_fold is not None:
        index = cross_validation_split(index, spec.cv_fold, cfg.split.n_folds)
    train_all = index[index.split == "train"]
    train = subsample_patients(train_all, spec.label_fraction, spec.seed)
    return train_all, train, index[index.split == "val"], index[index.split == "test"]


def planned_steps(cfg: Config, spec: FitSpec, n_train_all: int, n_train: int) -> int:
    """Optimisation steps of a run: the sweep's fixed budget (the same at every fraction), or the headline
    recipe's epochs over the labelled images; a linear probe's full-batch epochs."""
    if spec.protocol == "linear":
        return cfg.finetune.linear_epochs
    return sweep_steps(cfg, n_train_all) if spec.role == "sweep" else headline_steps(cfg, n_train)


def fit_run(cfg: Config, spec: FitSpec, backbone: torch.nn.Module, train: pd.DataFrame, val: pd.DataFrame,
            steps: int, features: dict | None = None) -> FitResult:
    """Fit one run's classifier from ``backbone`` for ``steps`` steps (see :func:`planned_steps`)."""
    cfg = cfg.for_task(spec.task)
    seed_everything(spec.seed)
    if spec.protocol == "linear":
        return fit_linear(cfg, backbone, features if features is not None else feature_table(cfg, backbone, train),
                          train, val, spec.seed)
    # A pretrained backbone moves slower than the new head so that fine-tuning does not wash its features out;
    # a random backbone has nothing to keep and trains at the head's rate.
    factor = 1.0 if spec.init == "random" else cfg.finetune.backbone_lr_factor
    return fit_full(cfg, backbone, train, val, steps, n_checks=cfg.finetune.epochs, seed=spec.seed,
                    backbone_lr_factor=factor)


def prediction_rows(part: pd.DataFrame, split: str, probability: np.ndarray, task: str, **columns) -> pd.DataFrame:
    """The rows ``predictions.csv`` holds for the images of ``part``: ids, split, fold, label, probability, and
    the run's own ``columns`` (init, protocol, label_fraction, seed, run, ...)."""
    return pd.DataFrame({
        "image_id": part.image_id.values, "patient_id": part.patient_id.values, "split": split,
        "fold": part.fold.values, "label": part[task].values.astype(int), "probability": probability,
        "task": task, **columns,
    })


class _Backbones:
    """Initial backbones and their frozen features, each computed once per (init, fold, seed) of the stage."""

    def __init__(self, cfg: Config, index: pd.DataFrame) -> None:
        self.cfg, self.index = cfg, index
        self._backbones: dict[tuple, torch.nn.Module] = {}
        self._features: dict[tuple, dict] = {}

    def key(self, spec: FitSpec) -> tuple:
        return spec.init, spec.cv_fold, spec.seed if spec.init == "random" else None

    def backbone(self, spec: FitSpec) -> torch.nn.Module:
        key = self.key(spec)
        if key not in self._backbones:
            seed_everything(spec.seed)  # a random init is a function of the run's seed
            self._backbones = {k: v for k, v in self._backbones.items() if k[:2] == key[:2]}  # keep memory low
            self._backbones[key] = initial_backbone(self.cfg, spec.init, spec.cv_fold)
        return self._backbones[key]

    def features(self, spec: FitSpec) -> dict:
        key = self.key(spec)
        if key not in self._features:
            self._features = {k: v for k, v in self._features.items() if k[:2] == key[:2]}
            self._features[key] = feature_table(self.cfg, self.backbone(spec), self.index)
        return self._features[key]


def _run_one(cfg: Config, index: pd.DataFrame, spec: FitSpec, backbones: _Backbones,
             run: StageRun) -> tuple[pd.DataFrame, dict]:
    """Fit, predict and write one run (or read it back when it already finished with the same settings)."""
    folder = run.folder / spec.run
    if run.part_done(folder, ["predictions.csv", "record.json"]):
        return (pd.read_csv(folder / "predictions.csv", keep_default_na=False),
                json.loads((folder / "record.json").read_text()))
    start = time.perf_counter()
    train_all, train, val, test = run_data(cfg, index, spec)
    features = backbones.features(spec) if spec.protocol == "linear" else None
    steps = planned_steps(cfg, spec, len(train_all), len(train))
    result = fit_run(cfg, spec, backbones.backbone(spec), train, val, steps, features)
    where = placement(cfg)
    columns = {"init": spec.init, "protocol": spec.protocol, "label_fraction": spec.label_fraction,
               "seed": spec.seed, "run": spec.run, "headline": spec.role == "headline", "sweep": spec.role == "sweep"}
    if spec.cv_fold is not None:
        columns["cv_fold"] = spec.cv_fold
    rows = pd.concat([prediction_rows(part, split, _probabilities(result, part, spec.task, where, features),
                                      spec.task, **columns) for split, part in (("val", val), ("test", test))],
                     ignore_index=True)
    record = {**asdict(spec), "n_train_patients": int(train.patient_id.nunique()), "n_train_images": len(train),
              "n_train_positive": int(train[spec.task].sum()), "steps": result.steps, "best_step": result.best_step,
              "best_val_auc": result.best_val_auc, "seconds": round(time.perf_counter() - start, 2)}
    folder.mkdir(parents=True, exist_ok=True)
    if spec.role == "headline":  # the models stages 04 and 05 read; the others keep their predictions only
        save_classifier(folder / "model.pt", result.model, meta={k: record[k] for k in (
            "init", "task", "protocol", "label_fraction", "seed")})
    atomic_write_text(folder / "history.csv", result.history.assign(run=spec.run, init=spec.init).to_csv(index=False))
    atomic_write_text(folder / "predictions.csv", rows.to_csv(index=False))
    atomic_write_json(folder / "record.json", record)
    run.mark_part_done(folder)
    return rows, record


def _probabilities(result: FitResult, part: pd.DataFrame, task: str, where, features: dict | None):
    """The fitted classifier's probabilities for the images of ``part``. A linear probe's backbone is frozen,
    so its features are those the probe trained on: the head is applied to them instead of running every image
    through ResNet-50 again (the same numbers, in fp32; a third of a sweep's linear-probe time on a CPU)."""
    if features is not None:
        stacked = torch.stack([features[i] for i in part.image_id.astype(str)])
        return head_probabilities(result.model.head.eval(), stacked)
    return predict(result.model, CachedImages(part, task).images, where)


def run_finetune(cfg: Config, force: bool = False) -> Path:
    """Train every run of :func:`plan_runs` (skipping those already done) and write the stage's tables.

    Outputs in ``03_finetune/``:

    - ``<run>/``: one folder per run (``<init>``: the headline run of the main task, with ``model.pt``;
      ``<init>-<task>``: of another task; ``<init>-<protocol>-f<fraction>-s<seed>``: a sweep point;
      ``<init>[-<task>]-cv<k>``: a cross-validation fold).
    - ``predictions.csv``: the validation and test predictions of the headline and sweep runs: image_id,
      patient_id, split, fold, label, probability, task, init, protocol, label_fraction, seed, run, headline,
      sweep. ``cv_predictions.csv``: those of the folds, with ``cv_fold``.
    - ``runs.csv``: one record per run (role, labelled women and images, steps, best validation ROC AUC and
      its step, seconds); ``sweep.csv``: the sweep's records.
    - ``finetune_curves.png``, and ``skipped.csv`` for initialisations that could not run (ImageNet weights
      absent from the local torch cache).
    """
    cv = uses_cross_validation(cfg)
    run = StageRun(cfg, "finetune", SECTIONS, ["predictions.csv"] + (["cv_predictions.csv"] if cv else []), force)
    if run.up_to_date:
        return run.folder
    index = load_index(cfg)
    out = run.begin()
    specs, skipped = plan_runs(cfg), []
    if "imagenet" in cfg.finetune.inits:
        try:
            resnet50_backbone("imagenet")
        except MammoError as exc:  # absent ImageNet weights are not a failure of the stage
            log.warning("skipping init imagenet: %s", exc)
            skipped.append({"init": "imagenet", "reason": str(exc)})
            specs = [s for s in specs if s.init != "imagenet"]
    progress = Progress("stage 03", [_cost(cfg, index, s) for s in specs])
    backbones = _Backbones(cfg, index)
    frames, cv_frames, records = [], [], []
    for i, spec in enumerate(specs):
        progress.begin(i, f"{spec.run} ({spec.task}, {spec.protocol}, {spec.label_fraction:.0%} of the labels, "
                          f"seed {spec.seed})")
        rows, record = _run_one(cfg, index, spec, backbones, run)
        (cv_frames if spec.role == "cv" else frames).append(rows)
        records.append(record)
    progress.end()
    _write_tables(cfg, out, frames, cv_frames, records, skipped)
    return run.finish()


def _cost(cfg: Config, index: pd.DataFrame, spec: FitSpec) -> float:
    """A run's expected cost in optimisation steps, for the time-left estimate (a linear probe costs ~1)."""
    if spec.protocol == "linear":
        return 1.0
    train_all, train, _, _ = run_data(cfg, index, spec)
    return float(planned_steps(cfg, spec, len(train_all), len(train)))


def _write_tables(cfg: Config, out: Path, frames: list, cv_frames: list, records: list, skipped: list) -> None:
    atomic_write_text(out / "predictions.csv", pd.concat(frames, ignore_index=True).to_csv(index=False))
    if cv_frames:
        atomic_write_text(out / "cv_predictions.csv", pd.concat(cv_frames, ignore_index=True).to_csv(index=False))
    else:  # an earlier run's folds must not be evaluated as this run's
        (out / "cv_predictions.csv").unlink(missing_ok=True)
    runs = pd.DataFrame(records)
    atomic_write_text(out / "runs.csv", runs.to_csv(index=False))
    sweep = [r for r in records if r["role"] == "sweep"]
    atomic_write_text(out / "sweep.csv", sweep_table(sweep).to_csv(index=False))
    atomic_write_text(out / "skipped.csv", pd.DataFrame(skipped, columns=["init", "reason"]).to_csv(index=False))
    headline = runs[(runs.role == "headline") & (runs.task == cfg.task)] if len(runs) else runs
    histories = [pd.read_csv(out / r / "history.csv") for r in headline.get("run", [])
                 if (out / r / "history.csv").exists()]
    if histories:
        figures.finetune_curves(pd.concat(histories, ignore_index=True), out / "finetune_curves.png")
