"""Stage 03: fine-tune a classifier from each initialisation (SimCLR, random, ImageNet) on the labelled set.

Protocols: ``linear`` trains only the head on frozen features (batch-norm statistics frozen too); ``full``
trains everything, the backbone at ``backbone_lr_factor`` times the head's learning rate. The class imbalance
is handled by weighting the positive class in the loss. The model kept is the epoch with the best
validation ROC AUC; the test split is touched only to write predictions at the end.

Per initialisation, the stage trains the headline run (``finetune.protocol`` at ``finetune.label_fraction``),
then the label-efficiency sweep over ``finetune.protocols`` x ``finetune.label_fractions``
(:mod:`mammo_utils.label_efficiency`) and, with ``finetune.cv``, a patient-level k-fold cross-validation of
the headline recipe (:func:`cross_validate`).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score
from torch.utils.data import DataLoader

from . import plots
from .augment import finetune_transform
from .config import Config
from .data import CachedImages, EpochShuffle
from .errors import DataError, MammoError
from .manifest import cross_validation_split, subsample_patients
from .models import Classifier, load_backbone, resnet50_backbone, save_classifier
from .paths import atomic_write_text, how_to_run, require, stage_dir
from .stage import is_done, mark_done
from .training import (
    build_trainer,
    cpu_speedups,
    fresh_start,
    read_metrics,
    seed_everything,
    use_channels_last,
)

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "synthetic", "augment", "pretrain", "finetune",
            "precision")
OFFICIAL_SPLIT = ("cbis-ddsm",)  # datasets whose test split is the official one: no cross-validation there


class FinetuneModule(pl.LightningModule):
    """Binary classifier (one logit) with a weighted BCE loss and validation ROC AUC.

    Args:
        model: the :class:`~mammo_utils.models.Classifier` to train.
        protocol: ``linear`` (frozen backbone) or ``full``.
        lr: head learning rate; backbone_lr_factor: backbone rate relative to it (``full`` only).
        weight_decay: AdamW weight decay.
        pos_weight: weight of the positive class (negatives / positives of the training set).
        channels_last: channels_last memory format for weights and inputs.
    """

    def __init__(self, model: Classifier, protocol: str = "full", lr: float = 1e-3, backbone_lr_factor: float = 0.1,
                 weight_decay: float = 1e-4, pos_weight: float = 1.0, channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))
        if protocol == "linear":
            for p in self.model.backbone.parameters():
                p.requires_grad_(False)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def on_train_epoch_start(self) -> None:
        if self.hparams.protocol == "linear":
            self.model.backbone.eval()  # frozen features: batch-norm running statistics stay as pretrained

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.hparams.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.model(x).squeeze(1)

    def _shared_step(self, batch, mode: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = self.loss(logits.float(), y.float())
        self.log(f"{mode}_loss", loss, on_epoch=True, on_step=mode == "train", prog_bar=True, batch_size=len(y))
        if mode == "val":
            self._val.append((logits.detach().float().cpu(), y.cpu()))
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        logits = torch.cat([v[0] for v in self._val]).numpy()
        y = torch.cat([v[1] for v in self._val]).numpy()
        self._val.clear()
        auc = roc_auc_score(y, logits) if len(np.unique(y)) > 1 else 0.5
        self.log("val_auc", float(auc), prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": self.model.head.parameters(), "lr": hp.lr}]
        if hp.protocol == "full":
            groups.append({"params": self.model.backbone.parameters(), "lr": hp.lr * hp.backbone_lr_factor})
        opt = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, self.trainer.max_epochs))
        return [opt], [sched]


def initial_backbone(cfg: Config, init: str) -> torch.nn.Module:
    """The backbone a fine-tuning run starts from."""
    if init == "simclr":
        return load_backbone(require(cfg, "pretrain", "backbone.pt"), hint=how_to_run(cfg, "pretrain"))
    return resnet50_backbone(init)


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, batch_size: int = 64, device: torch.device | None = None,
            dtype: torch.dtype | None = None) -> np.ndarray:
    """Probability of the positive class for (N, 1, S, S) images.

    Args:
        model: the classifier (put in eval mode here).
        images: (N, 1, S, S) in [0, 1], on the CPU.
        batch_size: images per forward pass.
        device: where ``model`` is (default: where its parameters are).
        dtype: autocast dtype (``linear_probe.autocast_dtype``), None for full precision.
    """
    from .linear_probe import autocast

    model.eval()
    device = device or next(model.parameters()).device
    out = []
    for i in range(0, len(images), batch_size):
        with autocast(device, dtype):
            logits = model(images[i : i + batch_size].float().to(device)).squeeze(1)
        out.append(torch.sigmoid(logits.float()).cpu())
    return torch.cat(out).numpy() if out else np.zeros(0)


def training_parts(cfg: Config, model: Classifier, init: str, protocol: str,
                   train: pd.DataFrame) -> tuple[FinetuneModule, DataLoader, int]:
    """The Lightning module (class-weighted loss) and the augmented, seeded training loader of one run."""
    f = cfg.finetune
    n_pos = int(train[cfg.task].sum())
    # A pretrained backbone moves slower than the new head so fine-tuning does not wash its features out; a
    # random backbone has nothing to keep and trains at the head's rate.
    factor = 1.0 if init == "random" else f.backbone_lr_factor
    module = FinetuneModule(model, protocol, f.lr, factor, f.weight_decay, pos_weight=(len(train) - n_pos) / n_pos,
                            channels_last=use_channels_last(cfg))
    batch = min(f.batch_size, len(train))
    loader = DataLoader(
        CachedImages(train, cfg.task, finetune_transform(cfg.image_size_px, cfg.augment)), batch_size=batch,
        sampler=EpochShuffle(len(train), cfg.seed), drop_last=len(train) > batch, num_workers=cfg.num_workers,
        persistent_workers=cfg.num_workers > 0,
    )
    return module, loader, batch


def finetune_one(cfg: Config, index: pd.DataFrame, init: str, out: Path) -> pd.DataFrame:
    """Fine-tune from one initialisation; returns its validation and test predictions."""
    f = cfg.finetune
    seed_everything(cfg.seed)
    train = subsample_patients(index[index.split == "train"], f.label_fraction, cfg.seed)
    val, test = index[index.split == "val"], index[index.split == "test"]
    n_pos = int(train[cfg.task].sum())
    if n_pos == 0 or n_pos == len(train):
        raise DataError(f"The training split has only one class for task {cfg.task!r} ({n_pos}/{len(train)} "
                        "positive); use a larger label fraction or another task.")
    module, train_loader, batch = training_parts(cfg, Classifier(initial_backbone(cfg, init)), init, f.protocol,
                                                 train)
    val_set = CachedImages(val, cfg.task)
    fresh_start(out)
    # Only the best epoch is kept: fine-tuning is short and restarts rather than resumes, so writing a 280 MB
    # last.ckpt every epoch would cost more than it saves.
    trainer, checkpoint = build_trainer(cfg, out, f.epochs, f.limit_batches, monitor="val_auc", mode="max",
                                        save_last=False)
    trainer.fit(module, train_loader, DataLoader(val_set, batch_size=2 * batch))
    best = checkpoint.best_model_path
    if best:  # the epoch with the best validation AUC, not the last one
        state = torch.load(best, map_location="cpu", weights_only=True)["state_dict"]
        module.load_state_dict(state)
    # model.pt below is the run's checkpoint; the Lightning one also holds optimiser state (3x the size).
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    model = module.model.to(memory_format=torch.contiguous_format).float()
    save_classifier(out / "model.pt", model, meta={"init": init, "task": cfg.task, "protocol": f.protocol,
                                                   "label_fraction": f.label_fraction})
    rows = []
    for split, part, ds in (("val", val, val_set), ("test", test, CachedImages(test, cfg.task))):
        prob = predict(model, ds.images)
        rows.append(pd.DataFrame({
            "image_id": part.image_id.values, "patient_id": part.patient_id.values, "split": split,
            "fold": part.fold.values, "label": part[cfg.task].values.astype(int), "probability": prob,
            "init": init, "protocol": f.protocol, "label_fraction": f.label_fraction, "task": cfg.task,
        }))
    history = read_metrics(out)
    if "val_auc" in history:
        history = history.dropna(subset=["val_auc"])[["epoch", "val_auc"]].assign(init=init)
        history.to_csv(out / "history.csv", index=False)
    return pd.concat(rows, ignore_index=True)


def cross_validate(cfg: Config, index: pd.DataFrame, init: str, out: Path, name: str | None = None) -> pd.DataFrame:
    """Patient-level k-fold cross-validation of the headline recipe (k = ``split.n_folds``).

    Fold k tests the patients of fold k, selects the model on fold k+1 and trains on the rest
    (:func:`~mammo_utils.manifest.cross_validation_split`); its run folder is ``<name>-cv<k>/`` (``name``
    defaults to ``init``). Returns the
    folds' validation and test rows with ``cv_fold``: over the folds, every patient is tested exactly once.
    """
    frames = []
    for k in range(cfg.split.n_folds):
        fold_index = cross_validation_split(index, k, cfg.split.n_folds)
        run = f"{name or init}-cv{k}"
        rows = finetune_one(cfg, fold_index, init, out / run).assign(headline=False, sweep=False, run=run, cv_fold=k)
        atomic_write_text(out / run / "predictions.csv", rows.to_csv(index=False))
        frames.append(rows)
    return pd.concat(frames, ignore_index=True)


def cv_applies(cfg: Config) -> bool:
    """Cross-validation runs when asked for, except where the dataset has an official test split."""
    if cfg.finetune.cv and cfg.dataset in OFFICIAL_SPLIT:
        log.info("%s has an official test split: it is used instead of cross-validation", cfg.dataset)
    return cfg.finetune.cv and cfg.dataset not in OFFICIAL_SPLIT


def run_finetune(cfg: Config, force: bool = False) -> Path:
    """Fine-tune one classifier per initialisation in ``cfg.finetune.inits``, then the label-efficiency sweep,
    then the headline recipe for the other ``finetune.tasks``.

    Outputs in ``03_fine_tuning/``:

    - ``<init>/model.pt``: the headline run (``finetune.protocol`` at ``finetune.label_fraction``), loadable
      with ``models.load_classifier``; stages 04 and 05 explain it.
    - ``<init>-<protocol>-f<fraction>/``: one folder per sweep run (:mod:`mammo_utils.label_efficiency`).
    - ``<init>-<task>/``: the headline recipe for each other task in ``finetune.tasks``.
    - ``predictions.csv``: image_id, patient_id, split, fold, label, probability, init, protocol,
      label_fraction, task, headline (True for the headline runs, one per init and task), sweep (True for the
      sweep's cells, the headline included when it is one) and run (the run folder's name).
    - ``sweep.csv``: one record per sweep cell (labelled patients and images, epochs, steps, best validation
      ROC AUC, seconds).
    - ``cv_predictions.csv`` with ``cv_fold`` when ``finetune.cv`` is on (:func:`cross_validate`), every task.
    - ``finetune_curves.png``, and ``skipped.csv`` for initialisations (or tasks) that could not run.
    """
    from .label_efficiency import headline_record, includes_headline, run_sweep, sweep_table, write_run

    out = stage_dir(cfg, "finetune", create=False)
    key = cfg.section_hash(*SECTIONS)
    cv = cv_applies(cfg)
    outputs = ["predictions.csv"] + (["cv_predictions.csv"] if cv else [])
    if not force and is_done(out, key, outputs):
        log.info("stage 03 is up to date in %s", out)
        return out
    index = pd.read_csv(require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)
    stage_dir(cfg, "finetune")
    cpu_speedups(cfg)
    predictions, histories, skipped, records, cv_rows = [], [], [], [], []
    for init in cfg.finetune.inits:
        start = time.perf_counter()
        try:
            rows = finetune_one(cfg, index, init, out / init)
            backbone = initial_backbone(cfg, init) if cfg.finetune.protocols else None
        except MammoError as exc:
            if init != "imagenet":
                raise
            log.warning("skipping init %s: %s", init, exc)  # absent ImageNet weights are not a failure
            skipped.append({"init": init, "task": "all", "reason": str(exc)})
            continue
        rows = rows.assign(headline=True, sweep=includes_headline(cfg), run=init)
        info = headline_record(cfg, index, init, out / init, time.perf_counter() - start)
        write_run(out / init, rows, info)
        predictions.append(rows)
        if backbone is not None:
            frames, infos = run_sweep(cfg, index, init, backbone, out, info)
            predictions += frames
            records += infos
        if cv:
            cv_rows.append(cross_validate(cfg, index, init, out))
        hist = out / init / "history.csv"
        if hist.exists():
            histories.append(pd.read_csv(hist))
        for task in cfg.all_tasks()[1:]:
            rows = _other_task(cfg.for_task(task), index, init, out, skipped)
            if rows is not None:
                predictions.append(rows)
                if cv:
                    cv_rows.append(cross_validate(cfg.for_task(task), index, init, out, name=f"{init}-{task}"))
    atomic_write_text(out / "predictions.csv", pd.concat(predictions, ignore_index=True).to_csv(index=False))
    atomic_write_text(out / "sweep.csv", sweep_table(records).to_csv(index=False))
    if cv_rows:
        atomic_write_text(out / "cv_predictions.csv", pd.concat(cv_rows, ignore_index=True).to_csv(index=False))
    else:  # an earlier run's folds must not be evaluated as this run's
        (out / "cv_predictions.csv").unlink(missing_ok=True)
    atomic_write_text(out / "skipped.csv",
                      pd.DataFrame(skipped, columns=["init", "task", "reason"]).to_csv(index=False))
    if histories:
        plots.finetune_curves(pd.concat(histories, ignore_index=True), out / "finetune_curves.png")
    mark_done(out, key, cfg)
    return out


def _other_task(cfg: Config, index: pd.DataFrame, init: str, out: Path, skipped: list) -> pd.DataFrame | None:
    """The headline recipe of ``init`` for ``cfg.task`` (not the run's main task) in ``<init>-<task>/``."""
    from .label_efficiency import headline_record, write_run

    run = f"{init}-{cfg.task}"
    start = time.perf_counter()
    try:
        rows = finetune_one(cfg, index, init, out / run)
    except DataError as exc:  # e.g. no malignant case in a tiny training split
        log.warning("skipping task %s for init %s: %s", cfg.task, init, exc)
        skipped.append({"init": init, "task": cfg.task, "reason": str(exc)})
        return None
    rows = rows.assign(headline=True, sweep=False, run=run)
    write_run(out / run, rows, {**headline_record(cfg, index, init, out / run, time.perf_counter() - start),
                                "run": run})
    return rows
