"""Fitting one classifier: the single path every fine-tuning run of stage 03 takes (the headline run, each
point of the label-efficiency sweep, each cross-validation fold).

Full fine-tuning (SimCLR's fine-tuning protocol, Chen et al. 2020, Sec. 4 and App. B): every layer trains
(:class:`FinetuneModule`), the pretrained backbone at ``backbone_lr_factor`` times the new head's rate, for a fixed
number of optimisation steps; the validation ROC AUC is measured ``n_checks`` times along the way and the best
weights are kept in memory (:class:`KeepBestWeights`). The other classifier, the linear probe on frozen features,
is :mod:`mammo_utils.finetune.linear`. The positive class is weighted by the class ratio of the training images
(:mod:`mammo_utils.finetune.loss`). The test images are only predicted, after the weights are chosen.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.evaluate.metrics import auc_or_half
from mammo_utils.finetune.augment import finetune_transform
from mammo_utils.finetune.loss import positive_class_weight
from mammo_utils.models import Classifier
from mammo_utils.prepare.loaders import CachedImages, EpochShuffle
from mammo_utils.runs.devices import placement
from mammo_utils.runs.trainer import make_trainer

log = logging.getLogger(__name__)


def require_both_classes(labels: np.ndarray, what: str) -> int:
    """The number of positive training images; :class:`DataError` when the training set has one class only."""
    n_pos, n = int(np.sum(labels)), len(labels)
    if n_pos == 0 or n_pos == n:
        raise DataError(f"{what}: the training images hold one class only ({n_pos}/{n} positive); use a larger "
                        "label fraction or another task.")
    return n_pos


def steps_per_epoch(n_images: int, batch_size: int, limit_batches: float | int = 1.0) -> int:
    """Optimisation steps in one pass over ``n_images`` (the last partial batch is dropped when there is a
    full one), capped by Lightning's ``limit_train_batches`` convention (an int caps, a float scales)."""
    steps = n_images // batch_size if n_images > batch_size else 1
    capped = min(steps, limit_batches) if isinstance(limit_batches, int) else int(steps * limit_batches)
    return max(1, capped)


class FinetuneModule(pl.LightningModule):
    """Binary classifier (one logit) with a class-weighted BCE loss; validation ROC AUC.

    Args:
        model: the :class:`~mammo_utils.models.Classifier` to train (every layer).
        lr: head learning rate; backbone_lr_factor: the backbone's rate relative to it.
        weight_decay: AdamW weight decay.
        pos_weight: weight of the positive class (negatives / positives among the training images).
        max_steps: optimisation steps of the run (the length of the cosine schedule).
        channels_last: channels_last memory format for weights and inputs.
    """

    def __init__(self, model: Classifier, lr: float = 1e-3, backbone_lr_factor: float = 0.1,
                 weight_decay: float = 1e-4, pos_weight: float = 1.0, max_steps: int = 100,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model
        self.loss = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([pos_weight]))
        if channels_last:
            self.model.to(memory_format=torch.channels_last)
        self._val: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → logits (B,)."""
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
        self.log("val_auc", auc_or_half(y, logits), prog_bar=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW([
            {"params": self.model.head.parameters(), "lr": hp.lr},
            {"params": self.model.backbone.parameters(), "lr": hp.lr * hp.backbone_lr_factor},
        ], weight_decay=hp.weight_decay)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(1, hp.max_steps))
        return [opt], [{"scheduler": sched, "interval": "step"}]


class KeepBestWeights(pl.Callback):
    """Keeps, in memory, the weights of the validation with the best ``val_auc`` (ties keep the earlier), and
    the history of every validation. Writing a 280 MB Lightning checkpoint at each one would cost more than
    many of the runs themselves."""

    def __init__(self) -> None:
        self.best_auc, self.best_step, self.best_state = -math.inf, -1, None
        self.history: list[dict] = []

    def on_validation_end(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        # on_validation_end, not on_validation_epoch_end: callbacks run that hook before the module logs val_auc.
        if trainer.sanity_checking or "val_auc" not in trainer.callback_metrics:
            return
        auc = float(trainer.callback_metrics["val_auc"])
        loss = trainer.callback_metrics.get("train_loss_step")
        self.history.append({"step": int(trainer.global_step), "val_auc": auc,
                             "train_loss": float(loss) if loss is not None else float("nan")})
        if auc > self.best_auc:
            self.best_auc, self.best_step = auc, int(trainer.global_step)
            self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


@dataclass
class FitResult:
    """A fitted classifier (CPU, fp32, eval mode) and what happened on the way."""

    model: Classifier
    steps: int
    best_step: int
    best_val_auc: float
    history: pd.DataFrame
    extra: dict = field(default_factory=dict)


def check_interval(max_steps: int, n_checks: int) -> int:
    """Steps between validations so that a run of ``max_steps`` validates at most ``n_checks`` times, the last
    at its end (``fit_full`` adds it when the interval does not divide the run): ``ceil(max_steps / n_checks)``.
    With one check per epoch of a headline run it is the epoch's length."""
    return max(1, math.ceil(max_steps / max(1, n_checks)))


def film_images(rows: pd.DataFrame, cfg: Config, augment: bool = False) -> CachedImages:
    """The films of ``rows`` (stage 01's index) labelled with ``cfg.task``, with the fine-tuning augmentation when
    ``augment`` (the training films)."""
    transform = finetune_transform(cfg.image_size_px, cfg.augment) if augment else None
    return CachedImages(rows, cfg.task, transform)


def fit_full(cfg: Config, backbone: torch.nn.Module, train: CachedImages, val: CachedImages, max_steps: int,
             n_checks: int, seed: int, backbone_lr_factor: float) -> FitResult:
    """Fine-tune every layer of ``Classifier(backbone)`` for ``max_steps`` steps on ``train``; keep the weights
    of the best of ``n_checks`` validations (evenly spaced, the last at the end).

    Args:
        cfg: the run's settings (``finetune`` section and placement).
        backbone: the initial backbone (not modified: a copy is trained).
        train, val: labelled images (films of the preprocessed index, or crops); ``train`` carries the
            augmentation (:func:`~mammo_utils.finetune.augment.finetune_transform`).
        max_steps: optimisation steps. n_checks: validations. seed: data order and augmentation.
        backbone_lr_factor: the backbone's learning rate relative to the head's.
    """
    f = cfg.finetune
    require_both_classes(train.labels.numpy(), "fine-tuning")
    where = placement(cfg)
    batch = min(f.batch_size, len(train))
    module = FinetuneModule(Classifier(copy.deepcopy(backbone)).train(), f.lr, backbone_lr_factor, f.weight_decay,
                            pos_weight=positive_class_weight(train.labels.numpy()), max_steps=max_steps,
                            channels_last=where.channels_last)
    loader = DataLoader(train, batch_size=batch, sampler=EpochShuffle(len(train), seed), drop_last=len(train) > batch,
                        num_workers=cfg.num_workers, persistent_workers=cfg.num_workers > 0)
    val_loader = DataLoader(val, batch_size=2 * batch)
    keeper = KeepBestWeights()
    trainer = make_trainer(cfg, max_steps=max_steps, limit_batches=f.limit_batches, callbacks=[keeper],
                           val_check_interval=check_interval(max_steps, n_checks), distributed=False,
                           log_epochs=False)
    trainer.fit(module, loader, val_loader)
    if not keeper.history or keeper.history[-1]["step"] != trainer.global_step:
        trainer.validate(module, val_loader, verbose=False)  # the last step is always a candidate
    if keeper.best_state is not None:
        module.load_state_dict(keeper.best_state)
    model = module.model.to("cpu", memory_format=torch.contiguous_format).float().eval()
    return FitResult(model, int(trainer.global_step), keeper.best_step, keeper.best_auc,
                     pd.DataFrame(keeper.history, columns=["step", "val_auc", "train_loss"]))
