"""The project's own fine-tuned CNN under a protocol: :func:`mammo_utils.finetune.full.fit_full`, every layer trained.

A frozen backbone with a linear head can only exploit a leak its features already expose; a network trained end
to end can also memorise its training items, twins included. The study fine-tunes it at a small size (a smaller
input, a few dozen steps) under A0 and A2 on whole films, and under A3b on patches (the honest patch task, from
the per-fold patch SimCLR backbone and from random weights). To stay within a CPU budget each seed trains once:
seed s tests fold s (mod the number of folds), so five seeds cover the five folds once and their pooled test
predictions are one cross-validation; the spread over seeds is then also a spread over folds.

The epoch (of ``n_checks`` validations) and the threshold (Youden's J) are chosen on validation, as in stage 03.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammo_utils.config import Config
from mammo_utils.evaluate.metrics import choose_threshold
from mammo_utils.finetune.full import film_images, fit_full
from mammo_utils.models import predict
from mammo_utils.prepare.loaders import CachedImages
from mammo_utils.protocols import splits
from mammo_utils.protocols.crossval import ArmRun, fold_rows
from mammo_utils.protocols.items import save_npy
from mammo_utils.runs.devices import placement
from mammo_utils.runs.trainer import seed_everything

log = logging.getLogger(__name__)


def resized_items(items: pd.DataFrame, size_px: int, folder: Path) -> pd.DataFrame:
    """``items`` with arrays of side ``size_px`` (antialiased; written once into ``folder``), for a small CNN."""
    first = np.load(items.array_path.iloc[0], allow_pickle=False)
    if first.shape[-1] == size_px:
        return items
    folder = Path(folder)
    paths = []
    for r in items.itertuples():
        path = folder / f"{r.item_id}.npy"
        if not path.exists():
            x = torch.from_numpy(np.load(r.array_path, allow_pickle=False).astype(np.float32))[None, None]
            save_npy(path, F.interpolate(x, size=(size_px, size_px), mode="bilinear", antialias=True)[0, 0].numpy())
        paths.append(str(path))
    return items.assign(array_path=paths)


def cnn_config(cfg: Config, size_px: int) -> Config:
    """The run's fine-tuning settings at the CNN's input size."""
    return dataclasses.replace(cfg, image_size_px=size_px)


def run_cnn(cfg: Config, unit: str, items: pd.DataFrame, backbone: torch.nn.Module, seed: int, k: int,
            n_folds: int, val_share: float, size_px: int, steps: int, n_checks: int, random_init: bool) -> ArmRun:
    """Fine-tune once and predict the test items of fold ``k``.

    Args:
        cfg: the run. unit: the arm's unit of split. items: with the arm's ``fold`` and arrays of side ``size_px``.
        backbone: the initial backbone (copied, not modified). seed: data order, augmentation, validation draw.
        k: the tested fold. n_folds, val_share: as for the regression. steps: optimisation steps. n_checks: validations (the epoch
        choice). random_init: the backbone trains at the head's rate (a pretrained one at
        ``finetune.backbone_lr_factor`` of it, as in stage 03).
    """
    items = items.reset_index(drop=True).assign(**{cfg.task: items["label"].to_numpy()})
    role = splits.fold_roles(items, k, unit, seed, val_share)
    train, val, test = (items[(role == r).to_numpy()] for r in (splits.TRAIN, splits.VAL, splits.TEST))
    seed_everything(seed)
    run_cfg = cnn_config(cfg, size_px)
    factor = 1.0 if random_init else cfg.finetune.backbone_lr_factor
    result = fit_full(run_cfg, backbone, film_images(train, run_cfg, augment=True), film_images(val, run_cfg), steps,
                      n_checks=n_checks, seed=seed, backbone_lr_factor=factor)
    where = placement(run_cfg)
    p_val = predict(result.model, CachedImages(val, cfg.task).images, where)
    p_test = predict(result.model, CachedImages(test, cfg.task).images, where)
    threshold = choose_threshold(val["label"].to_numpy(), p_val)
    fold = {"fold": k, **splits.leak_profile(items, role), "iterations": result.best_step, "seed": seed,
            "threshold": threshold, "chosen_on": "validation", "n_configurations": n_checks,
            "steps": result.steps, "best_val_auc": result.best_val_auc}
    return ArmRun(fold_rows(test, p_test, threshold), [fold])
