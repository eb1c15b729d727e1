r"""Stage 02: SimCLR pretraining of the one-channel ResNet-50 on unlabelled mammograms.

SimCLR (Chen et al., ICML 2020) draws two random views of each image, embeds them with a backbone and a
projection head, and minimises the NT-Xent loss: for a batch of :math:`N` images, :math:`2N` embeddings
:math:`z`, and positive pair :math:`(i, j)`,

.. math:: \ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}{\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k)/\tau)}

The loss and the head are lightly's (``NTXentLoss``, ``SimCLRProjectionHead``); Lightning runs the loop. No
label is used for training; labels of the validation split only feed the kNN monitor.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.utils.lars import LARS
from lightly.utils.scheduler import CosineWarmupScheduler
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader

from . import plots
from .augment import simclr_views
from .config import Config
from .data import CachedImages, EpochShuffle
from .models import FEATURE_DIM, normalize, resnet50_backbone, save_backbone
from .paths import require, stage_dir
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

SECTIONS = ("dataset", "seed", "image_size_px", "split", "synthetic", "augment", "pretrain", "precision")


class SimCLRModule(pl.LightningModule):
    """ResNet-50 backbone + SimCLR projection head, trained with NT-Xent; kNN monitor on validation.

    Args:
        hidden_dim, output_dim: projection head sizes (SimCLR: 2048 and 128).
        temperature: NT-Xent temperature :math:`\\tau`.
        optimizer: ``adamw``, ``sgd`` or ``lars`` (LARS as in SimCLR and lightly's ResNet-50 benchmark).
        lr: base learning rate; for sgd and lars it is scaled by batch_size / 256.
        weight_decay, warmup_epochs, batch_size: optimisation settings.
        knn_k: neighbours of the kNN monitor.
        channels_last: put weights and inputs in channels_last memory format.
    """

    def __init__(
        self,
        hidden_dim: int = 2048,
        output_dim: int = 128,
        temperature: float = 0.2,
        optimizer: str = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 1e-6,
        warmup_epochs: int = 0,
        batch_size: int = 64,
        knn_k: int = 10,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.backbone = resnet50_backbone()
        self.projection_head = SimCLRProjectionHead(FEATURE_DIM, hidden_dim, output_dim)
        # gather_distributed: with DDP, negatives come from every GPU's batch, as in SimCLR.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        self._features: dict[int, list] = {0: [], 1: []}
        self._labels: dict[int, list] = {0: [], 1: []}
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize(x)
        return x.contiguous(memory_format=torch.channels_last) if self.hparams.channels_last else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → projections (B, output_dim)."""
        return self.projection_head(self.backbone(self._prep(x)))

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone features (B, 2048): what fine-tuning and the kNN monitor use."""
        return self.backbone(self._prep(x))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (x0, x1), _ = batch
        loss = self.criterion(self(x0), self(x1))
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=x0.shape[0],
                 sync_dist=True)
        return loss

    def validation_step(self, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        x, y = batch
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
        bank_x, bank_y = feats[0].cpu().numpy(), labels[0].cpu().numpy()
        k = max(1, min(self.hparams.knn_k, len(bank_y)))
        knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance").fit(bank_x, bank_y)
        pred = knn.predict(feats[1].cpu().numpy())
        y = labels[1].cpu().numpy()
        self.log("val_knn_acc", float(balanced_accuracy_score(y, pred)) if len(np.unique(y)) > 1 else float("nan"),
                 prog_bar=True, rank_zero_only=True)
        self.log("knn_chance", 0.5, rank_zero_only=True)

    def configure_optimizers(self):
        hp = self.hparams
        params = list(self.backbone.parameters()) + list(self.projection_head.parameters())
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


def pretrain_index(cfg: Config) -> pd.DataFrame:
    """The images stage 02 may see: the training split (test images are never used, not even unlabelled)."""
    index = pd.read_csv(require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)
    return index


def dataloaders(cfg: Config, index: pd.DataFrame) -> tuple[DataLoader, list[DataLoader]]:
    """Training loader of view pairs (train split) and the two kNN monitor loaders (train bank, val)."""
    p = cfg.pretrain
    train = index[index.split == "train"]
    if len(train) < 2:
        raise ValueError(f"Only {len(train)} training images; SimCLR needs at least a batch of 2.")
    batch = min(p.batch_size, len(train))
    workers = cfg.num_workers
    common = dict(num_workers=workers, persistent_workers=workers > 0)
    train_loader = DataLoader(
        CachedImages(train, transform=simclr_views(cfg.image_size_px, cfg.augment)),
        batch_size=batch, sampler=EpochShuffle(len(train), cfg.seed), drop_last=True, **common,
    )
    monitor = [
        DataLoader(CachedImages(train, label_column=cfg.task), batch_size=2 * batch),
        DataLoader(CachedImages(index[index.split == "val"], label_column=cfg.task), batch_size=2 * batch),
    ]
    return train_loader, monitor


def build_module(cfg: Config) -> SimCLRModule:
    p = cfg.pretrain
    return SimCLRModule(
        hidden_dim=p.hidden_dim, output_dim=p.output_dim, temperature=p.temperature, optimizer=p.optimizer,
        lr=p.lr, weight_decay=p.weight_decay, warmup_epochs=p.warmup_epochs, batch_size=p.batch_size,
        knn_k=p.knn_k, channels_last=use_channels_last(cfg),
    )


def run_pretrain(cfg: Config, resume: bool = False, force: bool = False, callbacks: list | None = None,
                 deterministic: bool = False) -> Path:
    """Train SimCLR (or reuse the finished run) and write ``backbone.pt``, ``history.csv`` and curves.

    Args:
        cfg: the run configuration.
        resume: continue from ``checkpoints/last.ckpt`` of an interrupted run.
        force: train again even if a finished run with the same settings exists.
        callbacks: extra Lightning callbacks.
        deterministic: use deterministic algorithms only (bitwise reproducible, slower on GPU).
    """
    out = stage_dir(cfg, "pretrain", create=False)
    key = cfg.section_hash(*SECTIONS)
    if not force and is_done(out, key, ["backbone.pt"]):
        log.info("stage 02 is up to date in %s (delete it or pass force=True to train again)", out)
        return out
    index = pretrain_index(cfg)
    stage_dir(cfg, "pretrain")
    cpu_speedups(cfg)
    seed_everything(cfg.seed)
    train_loader, monitor = dataloaders(cfg, index)
    module = build_module(cfg)
    trainer, _ = build_trainer(cfg, out, cfg.pretrain.epochs, cfg.pretrain.limit_batches, callbacks=callbacks,
                               deterministic=deterministic)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if resume and ckpt_path is None:
        log.warning("no checkpoint to resume from in %s; starting from scratch", last.parent)
    if ckpt_path is None:
        fresh_start(out)
    trainer.fit(module, train_loader, monitor, ckpt_path=ckpt_path)
    if trainer.global_rank == 0:
        save_backbone(out / "backbone.pt", module.backbone, meta={"epochs": cfg.pretrain.epochs, "seed": cfg.seed})
        history = read_history(out)
        history.to_csv(out / "history.csv", index=False)
        plots.pretrain_curves(history, out / "pretrain_curves.png")
        mark_done(out, key, cfg)
    return out


def read_history(out: Path) -> pd.DataFrame:
    """Per-epoch metrics from the CSV logger (loss, kNN accuracy)."""
    df = read_metrics(out)
    cols = [c for c in ("train_loss_epoch", "val_knn_acc", "knn_chance") if c in df]
    return df.groupby("epoch")[cols].mean().reset_index() if cols else df


@torch.no_grad()
def embed_images(backbone: torch.nn.Module, images: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """Backbone features of (N, 1, S, S) images in [0, 1], as an (N, 2048) array."""
    backbone.eval()
    feats = [backbone(normalize(images[i : i + batch_size].float())) for i in range(0, len(images), batch_size)]
    return torch.cat(feats).numpy()


def embedding_figure(cfg: Config) -> Path:
    """t-SNE of the pretrained backbone's features of the train and val images, coloured by label."""
    from sklearn.manifold import TSNE

    from .models import load_backbone
    from .paths import how_to_run

    out = stage_dir(cfg, "pretrain")
    backbone = load_backbone(require(cfg, "pretrain", "backbone.pt"), hint=how_to_run(cfg, "pretrain"))
    index = pretrain_index(cfg)
    index = index[index.split.isin(["train", "val"])]
    feats = embed_images(backbone, CachedImages(index).images)
    perplexity = float(max(2, min(30, (len(index) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=cfg.seed).fit_transform(feats)
    labels = [plots.label_name(a, m) for a, m in zip(index.abnormal, index.malignant, strict=True)]
    return plots.embedding_scatter(xy, labels, out / "tsne.png", "t-SNE of SimCLR features (labels not used)")


def view_pairs_figure(cfg: Config, n: int = 6) -> Path:
    """Pairs of SimCLR views of a few training images (abnormal ones first)."""
    index = pretrain_index(cfg)
    train = index[index.split == "train"].sort_values("abnormal", ascending=False).head(n)
    ds = CachedImages(train, transform=simclr_views(cfg.image_size_px, cfg.augment))
    torch.manual_seed(cfg.seed)
    pairs = [(v[0][0].numpy(), v[1][0].numpy()) for v in (ds[i][0] for i in range(len(ds)))]
    return plots.view_pairs(pairs, stage_dir(cfg, "pretrain") / "view_pairs.png")
