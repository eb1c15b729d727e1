"""The label-efficiency sweep of stage 03: every initialisation x protocol x fraction of the labelled patients.

The paper's claim is that contrastive pretraining "excels with smaller labelled datasets"; this sweep is the
experiment that can confirm or refute it. For one initialisation it trains, at each fraction of the training
patients (stratified by the patient's worst label, seeded, the same patients for every initialisation and
protocol):

- ``linear``: a linear probe on frozen features (:mod:`mammo_utils.linear_probe`), features computed once;
- ``full``: full fine-tuning with the Lightning module of :mod:`mammo_utils.finetune`, for
  ``finetune.sweep_epochs`` epochs (default: the headline's), so a smaller labelled set also gets
  proportionally fewer optimisation steps and no fraction gets extra compute.

Validation and test are the full validation and test splits whatever the fraction. A cell equal to the
headline run (same protocol and label fraction) is the headline run, reused, not trained twice. Each run
writes ``03_fine_tuning/<init>-<protocol>-f<fraction>/``: ``predictions.csv``, ``config.json`` and its
checkpoint (``model.pt`` for full fine-tuning; ``head.pt`` for the linear probe, whose backbone is the
initialisation's, unchanged).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from sklearn.metrics import roc_auc_score

from .config import Config
from .data import CachedImages
from .errors import DataError
from .linear_probe import (
    autocast_dtype,
    compute_device,
    extract_features,
    fit_linear_head,
    head_probabilities,
)
from .manifest import subsample_patients
from .models import Classifier, save_classifier
from .paths import atomic_write_json, atomic_write_text
from .training import resolve_precision, seed_everything

log = logging.getLogger(__name__)


SWEEP_COLUMNS = ["run", "init", "protocol", "label_fraction", "task", "seed", "n_train_patients", "n_train_images",
                 "n_train_positive", "epochs", "steps", "best_epoch", "best_val_auc", "seconds", "headline_run"]


def sweep_table(records: list[dict]) -> pd.DataFrame:
    """The records of the sweep's runs as ``sweep.csv`` holds them (the columns exist even when it is empty)."""
    extra = [k for r in records for k in r if k not in SWEEP_COLUMNS]
    return pd.DataFrame(records, columns=SWEEP_COLUMNS + list(dict.fromkeys(extra)))


def run_name(init: str, protocol: str, fraction: float) -> str:
    """Folder and ``run`` name of a sweep cell, e.g. ``simclr-linear-f0.25``."""
    return f"{init}-{protocol}-f{float(fraction):g}"


def is_headline_cell(cfg: Config, protocol: str, fraction: float) -> bool:
    """True when a sweep cell is the headline run itself (same protocol, fraction and, for full, epochs)."""
    f = cfg.finetune
    same_epochs = protocol == "linear" or f.sweep_epochs in (0, f.epochs)
    return protocol == f.protocol and math.isclose(fraction, f.label_fraction) and same_epochs


def _rows(part: pd.DataFrame, split: str, prob: np.ndarray, task: str, init: str, protocol: str,
          fraction: float) -> pd.DataFrame:
    return pd.DataFrame({
        "image_id": part.image_id.values, "patient_id": part.patient_id.values, "split": split,
        "fold": part.fold.values, "label": part[task].values.astype(int), "probability": prob,
        "init": init, "protocol": protocol, "label_fraction": fraction, "task": task, "headline": False,
        "sweep": True, "run": run_name(init, protocol, fraction),
    })


def _train_subset(cfg: Config, index: pd.DataFrame, fraction: float) -> pd.DataFrame:
    train = subsample_patients(index[index.split == "train"], fraction, cfg.seed)
    n_pos = int(train[cfg.task].sum())
    if n_pos == 0 or n_pos == len(train):
        raise DataError(f"{fraction:g} of the training patients hold one class only for task {cfg.task!r} "
                        f"({n_pos}/{len(train)} positive).")
    return train


def _info(cfg: Config, train: pd.DataFrame, init: str, protocol: str, fraction: float, **extra) -> dict:
    return {"run": run_name(init, protocol, fraction), "init": init, "protocol": protocol,
            "label_fraction": fraction, "task": cfg.task, "seed": cfg.seed,
            "n_train_patients": int(train.patient_id.nunique()), "n_train_images": int(len(train)),
            "n_train_positive": int(train[cfg.task].sum()), "headline_run": False, **extra}


class KeepBestOnValidation(pl.Callback):
    """Scores the validation images at chosen epochs and keeps the best weights in memory.

    The sweep's full fine-tuning runs are many and short: writing a full Lightning checkpoint (weights and
    optimiser state, ~280 MB for a ResNet-50) every epoch would cost more than some of the runs themselves.
    """

    def __init__(self, images: torch.Tensor, labels: np.ndarray, epochs: set[int], cfg: Config) -> None:
        self.images, self.labels, self.epochs = images, labels, epochs
        self.device, self.dtype = compute_device(cfg), autocast_dtype(cfg)
        self.best_auc, self.best_epoch, self.best_state = -1.0, -1, None
        self.history: list[dict] = []

    def on_train_epoch_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        if epoch not in self.epochs:
            return
        from .finetune import predict

        prob = predict(module.model, self.images, device=module.device, dtype=self.dtype)
        module.train()
        auc = float(roc_auc_score(self.labels, prob)) if len(np.unique(self.labels)) > 1 else 0.5
        self.history.append({"epoch": epoch, "val_auc": auc})
        if auc > self.best_auc:
            self.best_auc, self.best_epoch = auc, epoch
            self.best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}


def _steps_per_epoch(n: int, batch: int, limit: float | int) -> int:
    steps = n // batch if n > batch else 1  # drop_last when the set is larger than one batch
    capped = min(steps, limit) if isinstance(limit, int) and not isinstance(limit, bool) else int(steps * limit)
    return max(1, capped)


def full_run(cfg: Config, index: pd.DataFrame, init: str, backbone: torch.nn.Module, fraction: float,
             out: Path) -> tuple[pd.DataFrame, dict]:
    """Full fine-tuning of one sweep cell; returns its validation and test rows and its record."""
    from .finetune import predict, training_parts

    f = cfg.finetune
    seed_everything(cfg.seed)
    train = _train_subset(cfg, index, fraction)
    val, test = index[index.split == "val"], index[index.split == "test"]
    epochs = f.sweep_epochs or f.epochs
    # A fresh copy in train mode: the linear probe left the shared backbone in eval mode (frozen statistics).
    module, loader, batch = training_parts(cfg, Classifier(copy.deepcopy(backbone)).train(), init, "full", train)
    # Validate about as often, in optimisation steps, as the headline run does (once per epoch of the whole
    # training split), and always after the last epoch: model selection is equally fine at every fraction.
    n_all = int((index.split == "train").sum())
    steps = _steps_per_epoch(len(train), batch, f.limit_batches)
    every = max(1, round(_steps_per_epoch(n_all, min(f.batch_size, n_all), f.limit_batches) / steps))
    check = {e for e in range(epochs) if (e + 1) % every == 0} | {epochs - 1}
    val_set = CachedImages(val, cfg.task)
    keeper = KeepBestOnValidation(val_set.images, val[cfg.task].to_numpy(), check, cfg)
    trainer = pl.Trainer(
        default_root_dir=out, max_epochs=epochs, limit_train_batches=f.limit_batches, limit_val_batches=0,
        num_sanity_val_steps=0, accelerator="gpu" if compute_device(cfg).type == "cuda" else "cpu",
        devices=1,  # a sweep run is small; one device, whatever the headline uses
        precision=resolve_precision(cfg), logger=False, enable_checkpointing=False, callbacks=[keeper],
        enable_model_summary=False, enable_progress_bar=False,
    )
    trainer.fit(module, loader)
    if keeper.best_state is not None:
        module.load_state_dict(keeper.best_state)
    model = module.model.to(memory_format=torch.contiguous_format).float()
    save_classifier(out / "model.pt", model, meta={"init": init, "task": cfg.task, "protocol": "full",
                                                   "label_fraction": fraction})
    device, dtype = compute_device(cfg), autocast_dtype(cfg)
    rows = [_rows(part, split, predict(model.to(device), CachedImages(part, cfg.task).images, device=device,
                                       dtype=dtype), cfg.task, init, "full", fraction)
            for split, part in (("val", val), ("test", test))]
    pd.DataFrame(keeper.history).assign(run=run_name(init, "full", fraction)).to_csv(out / "history.csv",
                                                                                     index=False)
    info = _info(cfg, train, init, "full", fraction, epochs=epochs, steps=int(trainer.global_step),
                 validated_epochs=sorted(check), best_epoch=keeper.best_epoch, best_val_auc=keeper.best_auc)
    return pd.concat(rows, ignore_index=True), info


def linear_runs(cfg: Config, index: pd.DataFrame, init: str, backbone: torch.nn.Module, fractions: list[float],
                out_root: Path) -> tuple[list[pd.DataFrame], list[dict]]:
    """Linear probes at every fraction, on features computed once for the train, val and test images."""
    f = cfg.finetune
    start = time.perf_counter()
    parts = {s: index[index.split == s] for s in ("train", "val", "test")}
    needed = pd.concat(parts.values())
    feats = extract_features(backbone, CachedImages(needed, None).images, cfg, batch_size=2 * f.batch_size)
    row_of = {image_id: i for i, image_id in enumerate(needed.image_id.astype(str))}
    log.info("linear probe %s: features of %d images in %.1f s", init, len(needed), time.perf_counter() - start)

    def features(part: pd.DataFrame) -> torch.Tensor:
        return feats[[row_of[i] for i in part.image_id.astype(str)]]

    frames, infos = [], []
    for fraction in fractions:
        name, begin = run_name(init, "linear", fraction), time.perf_counter()
        try:
            train = _train_subset(cfg, index, fraction)
        except DataError as exc:
            log.warning("skipping %s: %s", name, exc)
            continue
        probe = fit_linear_head(features(train), torch.tensor(train[cfg.task].to_numpy()),
                                features(parts["val"]), torch.tensor(parts["val"][cfg.task].to_numpy()),
                                epochs=f.linear_epochs, lr=f.linear_lr, weight_decay=f.weight_decay, seed=cfg.seed)
        rows = pd.concat([_rows(parts[s], s, head_probabilities(probe.head, features(parts[s])), cfg.task, init,
                                "linear", fraction) for s in ("val", "test")], ignore_index=True)
        out = out_root / name
        out.mkdir(parents=True, exist_ok=True)
        torch.save({"arch": "linear-head", "state_dict": probe.head.state_dict(), "init": init}, out / "head.pt")
        probe.history.assign(run=name).to_csv(out / "history.csv", index=False)
        info = _info(cfg, train, init, "linear", fraction, epochs=f.linear_epochs, steps=f.linear_epochs,
                     best_epoch=probe.best_epoch, best_val_auc=probe.best_val_auc,
                     backbone=f"the {init} initialisation, frozen (not saved again)",
                     seconds=round(time.perf_counter() - begin, 2))
        write_run(out, rows, info)
        frames.append(rows)
        infos.append(info)
    return frames, infos


def write_run(out: Path, rows: pd.DataFrame, info: dict) -> None:
    """A run folder's ``predictions.csv`` and ``config.json``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "predictions.csv", rows.to_csv(index=False))
    atomic_write_json(out / "config.json", info)


def headline_record(cfg: Config, index: pd.DataFrame, init: str, out: Path, seconds: float) -> dict:
    """The record of the headline run of ``init`` (written to ``<init>/config.json`` and ``sweep.csv``)."""
    f = cfg.finetune
    train = subsample_patients(index[index.split == "train"], f.label_fraction, cfg.seed)
    history = pd.read_csv(out / "history.csv") if (out / "history.csv").exists() else pd.DataFrame()
    best = history.loc[history["val_auc"].idxmax()] if len(history) else None
    steps = f.epochs * _steps_per_epoch(len(train), min(f.batch_size, len(train)), f.limit_batches)
    info = _info(cfg, train, init, f.protocol, f.label_fraction, epochs=f.epochs, steps=steps,
                 best_epoch=int(best["epoch"]) if best is not None else -1,
                 best_val_auc=float(best["val_auc"]) if best is not None else float("nan"),
                 seconds=round(seconds, 2))
    return {**info, "run": init}


def fractions_for(cfg: Config, protocol: str) -> tuple[float, ...]:
    """The label fractions the sweep runs for ``protocol`` (``finetune.full_fractions`` may narrow ``full``)."""
    f = cfg.finetune
    return tuple(f.full_fractions) if protocol == "full" and f.full_fractions else tuple(f.label_fractions)


def includes_headline(cfg: Config) -> bool:
    """True when one cell of the sweep is the headline run."""
    return any(is_headline_cell(cfg, p, x) for p in cfg.finetune.protocols for x in fractions_for(cfg, p))


def run_sweep(cfg: Config, index: pd.DataFrame, init: str, backbone: torch.nn.Module, out_root: Path,
              headline_info: dict) -> tuple[list[pd.DataFrame], list[dict]]:
    """Every (protocol, fraction) cell of ``cfg.finetune`` for one initialisation.

    Returns:
        The cells' prediction rows (not the headline's, which the caller marks as a sweep cell) and one
        record per cell (the headline's included).
    """
    f = cfg.finetune
    frames: list[pd.DataFrame] = []
    infos: list[dict] = []
    for protocol in f.protocols:
        todo = []
        for fraction in fractions_for(cfg, protocol):
            if is_headline_cell(cfg, protocol, fraction):
                infos.append({**headline_info, "run": run_name(init, protocol, fraction), "headline_run": True})
            else:
                todo.append(float(fraction))
        if protocol == "linear" and todo:
            got, got_info = linear_runs(cfg, index, init, backbone, todo, out_root)
            frames += got
            infos += got_info
        elif protocol == "full":
            for fraction in todo:
                name, begin = run_name(init, "full", fraction), time.perf_counter()
                try:
                    rows, info = full_run(cfg, index, init, backbone, fraction, out_root / name)
                except DataError as exc:
                    log.warning("skipping %s: %s", name, exc)
                    continue
                info["seconds"] = round(time.perf_counter() - begin, 2)
                log.info("%s: %d steps, best val ROC AUC %.3f (epoch %d), %.1f s", name, info["steps"],
                         info["best_val_auc"], info["best_epoch"], info["seconds"])
                write_run(out_root / name, rows, info)
                frames.append(rows)
                infos.append(info)
    return frames, infos
