"""Stage 02: self-supervised pretraining of the one-channel ResNet on unlabelled regions of the breast.

The method is ``pretrain.method`` (SimCLR, the paper's, by default; :mod:`mammo_utils.pretrain.methods`); it trains
``pretrain.steps`` steps of ``pretrain.batch_size`` regions (:mod:`mammo_utils.pretrain.regions`) cut from the films
at ``crops.film_size_px``, where a lesion keeps its size. No label is used for training. Every epoch (``steps /
epochs`` steps) the run records the loss beside its constant-output level, the pretext accuracy, and the kNN monitor
on the labelled crops of validation women (:mod:`mammo_utils.pretrain.monitor`), with the monitor's untrained value
as epoch 0: ``history.csv`` per backbone and ``pretraining.json`` for the stage.

Which films a pretraining may see is decided in one place, :func:`pretraining_images`:

- the main run (``backbone.pt``) sees the training split of the manifest: no validation or test film;
- when the run cross-validates (:func:`~mammo_utils.prepare.split.uses_cross_validation`), one more run per fold k
  (``cv<k>/backbone.pt``) sees only the training women of fold k, so the backbone fold k is tested with has never
  seen a test film of that fold, not even without its label.

Each run is resumable (``--resume`` continues from its ``checkpoints/last.ckpt``, which is deleted once the run has
finished) and skipped when it already finished with the same settings.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.models import save_backbone
from mammo_utils.prepare.loaders import EpochShuffle
from mammo_utils.prepare.split import cross_validation_split, uses_cross_validation
from mammo_utils.prepare.stage import load_crops, load_hires, load_index
from mammo_utils.pretrain import figures
from mammo_utils.pretrain.methods import METHODS, get_method
from mammo_utils.pretrain.monitor import KnnMonitor
from mammo_utils.pretrain.regions import BreastRegions
from mammo_utils.runs.devices import n_processes
from mammo_utils.runs.files import atomic_write_json, atomic_write_text, remove_stale_temporaries
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import (
    Progress,
    fresh_start,
    last_checkpoint,
    make_trainer,
    read_metrics,
    seed_everything,
)

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "backbone", "split", "crops", "views", "pretrain", "precision")
HISTORY_COLUMNS = ["epoch", "step", "loss", "loss_constant_output", "pretext_top1", "pretext_chance", "knn"]


def pretraining_images(index: pd.DataFrame, fold: int | None = None, n_folds: int = 5) -> tuple[pd.DataFrame, ...]:
    """The films a pretraining run may train on, and the validation films of its kNN monitor.

    Args:
        index: the preprocessed index (``split`` and ``fold`` by patient).
        fold: None for the main run (the manifest's training split); k for the run that cross-validation fold
            k starts from (the training women of fold k: not fold k, which it tests, nor fold k+1, which
            chooses its weights).
        n_folds: the number of folds.

    Returns:
        ``(train, val)`` rows.
    """
    if fold is not None:
        index = cross_validation_split(index, fold, n_folds)
    return index[index.split == "train"], index[index.split == "val"]


def regions_loader(cfg: Config, train: pd.DataFrame) -> DataLoader:
    """Batches of random regions of the training films' breasts, ``steps / epochs`` batches an epoch (in every
    process of a distributed run: Lightning deals the regions out among them)."""
    if len(train) < 1:
        raise DataError("No training film to pretrain on. Check the manifest's split (stage 01).")
    p = cfg.pretrain
    per_epoch = max(1, p.steps // max(1, p.epochs)) * p.batch_size * n_processes(cfg)
    dataset = BreastRegions(load_hires(train), round(cfg.crops.size_px * cfg.views.region_scale), per_epoch)
    return DataLoader(dataset, batch_size=p.batch_size, sampler=EpochShuffle(per_epoch, cfg.seed), drop_last=True,
                      num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)


def knn_monitor(cfg: Config, crops: pd.DataFrame, arrays: np.ndarray, train: pd.DataFrame,
                val: pd.DataFrame) -> KnnMonitor:
    """The kNN monitor of a run: the labelled crops of its training women (the bank) and of its validation women
    (the queries)."""
    def part(rows: pd.DataFrame) -> np.ndarray:
        return crops.image_id.isin(set(rows.image_id.astype(str))).to_numpy()

    bank, queries = part(train), part(val)
    return KnnMonitor(torch.from_numpy(arrays[bank])[:, None], crops.label.to_numpy()[bank],
                      torch.from_numpy(arrays[queries])[:, None], crops.label.to_numpy()[queries], k=cfg.pretrain.knn_k)


def build_module(cfg: Config):
    """The LightningModule of ``pretrain.method``, built from the run's settings."""
    method = get_method(cfg.pretrain.method)
    return method(**method.settings(cfg))


def pretrain_one(cfg: Config, train: pd.DataFrame, monitor: KnnMonitor, out: Path, run: StageRun,
                 resume: bool = False, callbacks: list | None = None, deterministic: bool = False) -> Path:
    """Train one backbone on regions of the ``train`` films (kNN monitor ``monitor``) into ``out``; skipped when
    already done."""
    if run.part_done(out, ["backbone.pt", "history.csv"]):
        return out
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    seed_everything(cfg.seed)
    loader = regions_loader(cfg, train)
    module = build_module(cfg)
    module.monitor = monitor
    untrained_knn = monitor.score(module.backbone)  # epoch 0: the same random weights for a resumed run
    trainer = make_trainer(cfg, out, max_epochs=cfg.pretrain.epochs, callbacks=callbacks,
                           checkpoint=last_checkpoint(out), deterministic=deterministic)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if resume and ckpt_path is None:
        log.warning("no checkpoint to resume from in %s; starting from scratch", last.parent)
    if ckpt_path is None:
        fresh_start(out)
    trainer.fit(module, loader, ckpt_path=ckpt_path)
    if trainer.global_rank == 0:  # under DDP every process runs this function; one writes the files
        history = read_history(out, untrained_knn, cfg.pretrain.steps // max(1, cfg.pretrain.epochs))
        save_backbone(out / "backbone.pt", module.backbone, meta={
            "method": cfg.pretrain.method, "steps": int(trainer.global_step), "seed": cfg.seed,
            "n_train_images": len(train), "n_train_patients": int(train.patient_id.nunique())})
        atomic_write_text(out / "history.csv", history.to_csv(index=False))
        run.mark_part_done(out, n_train_images=len(train), train_image_ids=train.image_id.astype(str).tolist())
        # Lightning's last.ckpt (weights with optimiser state) only serves to resume an unfinished run; a
        # finished one is skipped or, with force, trained from scratch, so it goes.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return out


def run_pretrain(cfg: Config, resume: bool = False, force: bool = False, callbacks: list | None = None,
                 deterministic: bool = False) -> Path:
    """Pretrain (or reuse the finished runs) and write ``backbone.pt``, ``history.csv``, ``pretraining.json``,
    ``pretrain_curves.png`` and, for cross-validation, ``cv<k>/backbone.pt`` and ``cv<k>/history.csv`` per fold.

    Args:
        cfg: the run configuration.
        resume: continue each unfinished run from its ``checkpoints/last.ckpt``.
        force: train again even if finished runs with the same settings exist.
        callbacks: extra Lightning callbacks.
        deterministic: use deterministic algorithms only (bitwise reproducible, slower on GPU).
    """
    folds = list(range(cfg.split.n_folds)) if uses_cross_validation(cfg) and set(cfg.finetune.inits) & set(METHODS) else []
    run = StageRun(cfg, "pretrain", SECTIONS, ["backbone.pt", "pretraining.json"] + [f"cv{k}/backbone.pt" for k in folds],
                   force)
    if run.up_to_date:
        return run.folder
    index = load_index(cfg)
    crops, arrays = load_crops(cfg)
    out = run.begin()
    runs = [(None, out)] + [(k, out / f"cv{k}") for k in folds]
    if force:
        for _, folder in runs:
            (folder / "stage.json").unlink(missing_ok=True)
    progress = Progress("stage 02", [1.0] * len(runs))
    for i, (fold, folder) in enumerate(runs):
        train, val = pretraining_images(index, fold, cfg.split.n_folds)
        what = "the training split" if fold is None else f"cross-validation fold {fold}'s training women"
        progress.begin(i, f"{cfg.pretrain.method}, {cfg.pretrain.steps} steps on regions of {len(train)} films of {what}")
        pretrain_one(cfg, train, knn_monitor(cfg, crops, arrays, train, val), folder, run, resume=resume,
                     callbacks=callbacks, deterministic=deterministic)
    progress.end()
    if not _writes_files():
        return out  # the other processes of a DDP run: process 0 writes the figure and stage.json
    histories = {("main" if k is None else f"cv{k}"): pd.read_csv(f / "history.csv") for k, f in runs}
    atomic_write_json(out / "pretraining.json", pretraining_summary(cfg, histories))
    figures.pretrain_curves(histories["main"], out / "pretrain_curves.png")
    return run.finish(folds=folds)


def pretraining_summary(cfg: Config, histories: dict[str, pd.DataFrame]) -> dict:
    """``pretraining.json``: for each backbone, per epoch the loss beside its constant-output level, the pretext
    accuracy beside its chance, and the kNN monitor (epoch 0: the untrained network)."""
    p = cfg.pretrain
    return {"dataset": cfg.dataset, "method": p.method, "backbone": cfg.backbone, "steps": p.steps,
            "batch_size": p.batch_size, "crop_size_px": cfg.crops.size_px, "film_size_px": cfg.crops.film_size_px,
            "knn_chance": 0.5,
            "backbones": {name: h.to_dict("records") for name, h in histories.items()}, **provenance(cfg)}


def _writes_files() -> bool:
    """Whether this process writes a stage's files: the only one, or rank 0 of a distributed run (whose process
    group Lightning may already have torn down, so the launcher's environment is read too)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)) or 0) == 0 and \
        int(os.environ.get("NODE_RANK", 0) or 0) == 0


def read_history(out: Path, untrained_knn: float, steps_per_epoch: int) -> pd.DataFrame:
    """The run's history, one row per epoch from the CSV logger, after a row 0 for the untrained network (its kNN
    monitor; no loss yet): ``epoch, step, loss, loss_constant_output, pretext_top1, pretext_chance, knn``."""
    df = read_metrics(out)
    cols = {"train_loss_epoch": "loss", "loss_constant_output": "loss_constant_output",
            "pretext_top1": "pretext_top1", "knn": "knn"}
    have = [c for c in cols if c in df]
    per_epoch = df.groupby("epoch")[have].mean().reset_index().rename(columns=cols) if have else df
    per_epoch["epoch"] = per_epoch["epoch"].astype(int) + 1
    per_epoch["step"] = per_epoch["epoch"] * steps_per_epoch
    if "loss_constant_output" in per_epoch:
        per_epoch["pretext_chance"] = 1 / np.exp(per_epoch["loss_constant_output"])
    first = pd.DataFrame([{"epoch": 0, "step": 0, "knn": untrained_knn}])
    return pd.concat([first, per_epoch], ignore_index=True).reindex(columns=HISTORY_COLUMNS)
