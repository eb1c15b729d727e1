"""What every contrastive method here shares: the backbone, the two views made on the device, the training step,
the measurements that show it learns (:mod:`mammo_utils.pretrain.monitor`), and the optimiser with its schedule.

A method subclasses :class:`ContrastiveModule`, builds its heads and loss in ``__init__`` and defines
:meth:`~ContrastiveModule.contrastive_step` (loss and pretext accuracy of a batch of view pairs) and
:meth:`~ContrastiveModule.constant_output_loss` (the loss of a network that has learnt nothing). No label is used
for training; the labelled crops of the kNN monitor (:class:`~mammo_utils.pretrain.monitor.KnnMonitor`, set by the
stage as ``module.monitor``) only watch.
"""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler

from mammo_utils.models import make_backbone, normalize
from mammo_utils.pretrain.monitor import KnnMonitor
from mammo_utils.pretrain.views import views
from mammo_utils.sections import ViewsConfig


class ContrastiveModule(pl.LightningModule):
    """A one-channel ResNet backbone trained by a contrastive loss on two views of each region of the breast.

    A subclass calls ``super().__init__(...)`` with the common arguments, then ``self.save_hyperparameters()``;
    these are read here: ``backbone`` (``resnet18`` or ``resnet50``), ``crop_size_px`` (side of a view),
    ``views`` (the fields of :class:`~mammo_utils.config.ViewsConfig`), ``optimizer`` (``adamw``, ``sgd`` or
    ``lars``: LARS as in SimCLR and lightly's ResNet-50 benchmark), ``lr`` (for sgd and lars scaled by
    batch_size / 256, Goyal et al. 2017), ``weight_decay``, ``warmup_steps``, ``batch_size``, ``seed`` (of the
    views) and ``channels_last``.
    """

    def __init__(self, backbone: str = "resnet50") -> None:
        super().__init__()
        self.backbone = make_backbone(backbone)
        self.monitor: KnnMonitor | None = None

    @classmethod
    def settings(cls, cfg) -> dict:
        """The constructor's arguments from a run's configuration (``pretrain`` and ``views`` sections, placement).
        A method with settings of its own extends this (see :class:`~mammo_utils.pretrain.methods.moco.MoCoModule`)."""
        from dataclasses import asdict

        from mammo_utils.runs.devices import placement

        p = cfg.pretrain
        return dict(backbone=cfg.backbone, crop_size_px=cfg.crops.size_px, views=asdict(cfg.views),
                    hidden_dim=p.hidden_dim, output_dim=p.output_dim, temperature=p.temperature,
                    optimizer=p.optimizer, lr=p.lr, weight_decay=p.weight_decay, warmup_steps=p.warmup_steps,
                    batch_size=p.batch_size, seed=cfg.seed, channels_last=placement(cfg).channels_last)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, D) of images (B, 1, H, W) in [0, 1]: what fine-tuning and the monitor use."""
        return self.backbone(self._prep(x))

    def two_views(self, regions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two views of a batch of regions, drawn from a generator seeded by (seed, step): the same step always
        gets the same views, so a resumed run replays its steps exactly."""
        g = torch.Generator().manual_seed(int(self.hparams.seed) * 1_000_003 + int(self.global_step))
        cfg, size = ViewsConfig(**self.hparams.views), self.hparams.crop_size_px
        return views(regions, size, cfg, g), views(regions, size, cfg, g)

    def contrastive_step(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, float]:
        """The method's loss for first views ``x0`` and second views ``x1`` (B, 1, H, W), and its pretext accuracy
        (how often a view's partner wins among the candidates)."""
        raise NotImplementedError

    def contrastive_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The method's loss alone (what an optimisation step minimises)."""
        return self.contrastive_step(x0, x1)[0]

    def constant_output_loss(self) -> float:
        """The loss of a network that gives every view the same vector: the level training must end below."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        regions, _ = batch  # regions of the breast; the label slot is -1: no label is used
        x0, x1 = self.two_views(regions)
        loss, top1 = self.contrastive_step(x0, x1)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(x0), sync_dist=True)
        self.log("pretext_top1", top1, on_step=False, on_epoch=True, batch_size=len(x0), sync_dist=True)
        return loss

    def on_train_epoch_end(self) -> None:
        self.log("loss_constant_output", self.constant_output_loss(), rank_zero_only=True)
        if self.monitor is not None and self.monitor.usable:
            self.log("knn", self.monitor.score(self.backbone), prog_bar=True, rank_zero_only=True)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def configure_optimizers(self):
        hp = self.hparams
        params = self.trainable_parameters()
        if hp.optimizer == "adamw":
            opt = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        else:
            lr = hp.lr * hp.batch_size * max(1, self.trainer.world_size) / 256  # linear scaling rule
            cls = LARS if hp.optimizer == "lars" else torch.optim.SGD
            opt = cls(params, lr=lr, momentum=0.9, weight_decay=hp.weight_decay)
        steps = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = CosineWarmupScheduler(opt, warmup_epochs=min(hp.warmup_steps, steps), max_epochs=steps)
        return [opt], [{"scheduler": scheduler, "interval": "step"}]
