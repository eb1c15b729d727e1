"""What every contrastive method here shares: the backbone, the training step's shape, the kNN monitor, the
optimiser and its schedule.

A method subclasses :class:`ContrastiveModule` and defines :meth:`~ContrastiveModule.contrastive_loss` of the
two views of a batch (and its heads in ``__init__``). No label is used for training; the labels of the
validation split only feed the kNN monitor (:func:`knn_balanced_accuracy`), which measures how well the
features separate the classes without training anything on them.
"""

from __future__ import annotations

import numpy as np
import pytorch_lightning as pl
import torch
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from mammo_utils.models import FEATURE_DIM, normalize, resnet50_backbone


def knn_balanced_accuracy(bank_features: np.ndarray, bank_labels: np.ndarray, query_features: np.ndarray,
                          query_labels: np.ndarray, k: int = 10) -> float:
    """Balanced accuracy of a k-nearest-neighbour vote in feature space (cosine distance, closer counts more).

    The monitor of self-supervised training (Wu et al. 2018; lightly's benchmarks): each query image (the
    validation split) takes the labels of its ``k`` nearest images of the bank (the training split). No
    weight is trained on the labels, so a rising value means the features themselves separate the classes.

    Args:
        bank_features, query_features: (N, D) and (M, D) features.
        bank_labels, query_labels: (N,) and (M,) class labels.
        k: neighbours (capped at the bank's size).

    Returns:
        Balanced accuracy on the queries; NaN when they hold one class only. Chance is 0.5.
    """
    if len(np.unique(query_labels)) < 2:
        return float("nan")
    k = max(1, min(k, len(bank_labels)))
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance").fit(bank_features, bank_labels)
    return float(balanced_accuracy_score(query_labels, knn.predict(query_features)))


class ContrastiveModule(pl.LightningModule):
    """The one-channel ResNet-50 backbone trained by a contrastive loss on two views of each image.

    A subclass calls ``super().__init__()`` then ``self.save_hyperparameters()``; these hyperparameters are
    read here: ``temperature``, ``optimizer`` (``adamw``, ``sgd`` or ``lars``: LARS as in SimCLR and lightly's
    ResNet-50 benchmark), ``lr`` (for sgd and lars scaled by batch_size / 256, Goyal et al. 2017),
    ``weight_decay``, ``warmup_epochs``, ``batch_size``, ``knn_k`` (neighbours of the kNN monitor) and
    ``channels_last`` (weights and inputs in channels_last memory).
    """

    def __init__(self) -> None:
        super().__init__()
        self.backbone = resnet50_backbone()
        self._features: dict[int, list[torch.Tensor]] = {0: [], 1: []}
        self._labels: dict[int, list[torch.Tensor]] = {0: [], 1: []}

    @classmethod
    def settings(cls, cfg, n_train_images: int) -> dict:
        """The constructor's arguments from a run's configuration (``pretrain`` section, placement). A method
        with settings of its own extends this (see :class:`~mammo_utils.pretrain.methods.moco.MoCoModule`)."""
        from mammo_utils.runs.devices import placement

        p = cfg.pretrain
        return dict(hidden_dim=p.hidden_dim, output_dim=p.output_dim, temperature=p.temperature,
                    optimizer=p.optimizer, lr=p.lr, weight_decay=p.weight_decay, warmup_epochs=p.warmup_epochs,
                    batch_size=p.batch_size, knn_k=p.knn_k, channels_last=placement(cfg).channels_last)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, 2048) of images (B, 1, H, W) in [0, 1]: what fine-tuning and the monitor use."""
        return self.backbone(self._prep(x))

    def contrastive_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """The method's loss for a batch of first views ``x0`` and second views ``x1`` (B, 1, H, W)."""
        raise NotImplementedError

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (x0, x1), _ = batch  # the two views; the label slot is -1: no label is used
        loss = self.contrastive_loss(x0, x1)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x0.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch  # loader 0: the training images (the bank), loader 1: the validation images (the queries)
        self._features[dataloader_idx].append(torch.nn.functional.normalize(self.embed(x).float(), dim=1))
        self._labels[dataloader_idx].append(y)

    def on_validation_epoch_end(self) -> None:
        if not self._features[0] or not self._features[1]:
            return
        feats = {i: self.all_gather(torch.cat(self._features[i])).reshape(-1, FEATURE_DIM) for i in (0, 1)}
        labels = {i: self.all_gather(torch.cat(self._labels[i])).reshape(-1) for i in (0, 1)}
        for i in (0, 1):
            self._features[i].clear()
            self._labels[i].clear()
        score = knn_balanced_accuracy(feats[0].cpu().numpy(), labels[0].cpu().numpy(), feats[1].cpu().numpy(),
                                      labels[1].cpu().numpy(), self.hparams.knn_k)
        self.log("val_knn_acc", score, prog_bar=True, rank_zero_only=True)
        self.log("knn_chance", 0.5, rank_zero_only=True)

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
        per_epoch = max(1, steps // max(1, self.trainer.max_epochs))
        scheduler = CosineWarmupScheduler(opt, warmup_epochs=hp.warmup_epochs * per_epoch, max_epochs=steps)
        return [opt], [{"scheduler": scheduler, "interval": "step"}]
