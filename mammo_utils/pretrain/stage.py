"""Stage 02: self-supervised pretraining of the one-channel ResNet-50 on unlabelled mammograms.

The method is ``pretrain.method`` (SimCLR, the paper's, by default; :mod:`mammo_utils.pretrain.methods`). No label is
used for training; the labels of the validation split only feed the kNN monitor. Which films a pretraining may
see is decided in one place, :func:`pretraining_images`:

- the main run (``backbone.pt``) sees the training split of the manifest: no validation or test film;
- when stage 03 cross-validates (:func:`~mammo_utils.prepare.split.uses_cross_validation`), one more run per fold k
  (``cv<k>/backbone.pt``) sees only the training women of fold k, so the backbone fold k is tested with has
  never seen a test film of that fold, not even without its label.

Each run is resumable (``--resume`` continues from its ``checkpoints/last.ckpt``, which is deleted once the run
has finished) and skipped when it already finished with the same settings.
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
from mammo_utils.models import normalize, save_backbone
from mammo_utils.plots import label_name
from mammo_utils.prepare.loaders import CachedImages, EpochShuffle
from mammo_utils.prepare.split import cross_validation_split, uses_cross_validation
from mammo_utils.prepare.stage import load_index
from mammo_utils.pretrain import figures
from mammo_utils.pretrain.methods import METHODS, get_method
from mammo_utils.pretrain.views import simclr_views
from mammo_utils.runs.files import remove_stale_temporaries
from mammo_utils.runs.paths import require, stage_dir
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

SECTIONS = ("dataset", "seed", "image_size_px", "split", "augment", "pretrain", "precision")


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


def dataloaders(cfg: Config, train: pd.DataFrame, val: pd.DataFrame) -> tuple[DataLoader, list[DataLoader]]:
    """Loader of view pairs of the training films, and the kNN monitor's loaders (bank: train, queries: val)."""
    if len(train) < 2:
        raise DataError(f"Only {len(train)} training images; contrastive pretraining needs at least a batch of 2.")
    batch = min(cfg.pretrain.batch_size, len(train))
    workers = cfg.num_workers
    train_loader = DataLoader(
        CachedImages(train, transform=simclr_views(cfg.image_size_px, cfg.augment)), batch_size=batch,
        sampler=EpochShuffle(len(train), cfg.seed), drop_last=True, num_workers=workers,
        persistent_workers=workers > 0,
    )
    monitor = [DataLoader(CachedImages(part, label_column=cfg.task), batch_size=2 * batch) for part in (train, val)]
    return train_loader, monitor


def build_module(cfg: Config, n_train_images: int):
    """The LightningModule of ``pretrain.method``, built from the run's settings."""
    method = get_method(cfg.pretrain.method)
    return method(**method.settings(cfg, n_train_images))


def pretrain_one(cfg: Config, train: pd.DataFrame, val: pd.DataFrame, out: Path, run: StageRun,
                 resume: bool = False, callbacks: list | None = None, deterministic: bool = False) -> Path:
    """Train one backbone on ``train`` (kNN monitor on ``val``) into ``out``; skipped when already done."""
    if run.part_done(out, ["backbone.pt"]):
        return out
    out.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out)
    seed_everything(cfg.seed)
    train_loader, monitor = dataloaders(cfg, train, val)
    module = build_module(cfg, len(train))
    trainer = make_trainer(cfg, out, max_epochs=cfg.pretrain.epochs, limit_batches=cfg.pretrain.limit_batches,
                           callbacks=callbacks, checkpoint=last_checkpoint(out), deterministic=deterministic)
    last = out / "checkpoints" / "last.ckpt"
    ckpt_path = str(last) if resume and last.exists() else None
    if resume and ckpt_path is None:
        log.warning("no checkpoint to resume from in %s; starting from scratch", last.parent)
    if ckpt_path is None:
        fresh_start(out)
    trainer.fit(module, train_loader, monitor, ckpt_path=ckpt_path)
    if trainer.global_rank == 0:  # under DDP every process runs this function; one writes the files
        save_backbone(out / "backbone.pt", module.backbone, meta={
            "method": cfg.pretrain.method, "epochs": cfg.pretrain.epochs, "seed": cfg.seed,
            "n_train_images": len(train), "n_train_patients": int(train.patient_id.nunique())})
        read_history(out).to_csv(out / "history.csv", index=False)
        run.mark_part_done(out, n_train_images=len(train), train_image_ids=train.image_id.astype(str).tolist())
        # Lightning's last.ckpt (weights with optimiser state, ~290 MB for ResNet-50) only serves to resume an
        # unfinished run; a finished one is skipped or, with force, trained from scratch, so it goes.
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return out


def run_pretrain(cfg: Config, resume: bool = False, force: bool = False, callbacks: list | None = None,
                 deterministic: bool = False) -> Path:
    """Pretrain (or reuse the finished runs) and write ``backbone.pt``, ``history.csv``, ``pretrain_curves.png``
    and, for cross-validation, ``cv<k>/backbone.pt`` per fold.

    Args:
        cfg: the run configuration.
        resume: continue each unfinished run from its ``checkpoints/last.ckpt``.
        force: train again even if finished runs with the same settings exist.
        callbacks: extra Lightning callbacks.
        deterministic: use deterministic algorithms only (bitwise reproducible, slower on GPU).
    """
    folds = list(range(cfg.split.n_folds)) if uses_cross_validation(cfg) and set(cfg.finetune.inits) & set(METHODS) else []
    run = StageRun(cfg, "pretrain", SECTIONS, ["backbone.pt"] + [f"cv{k}/backbone.pt" for k in folds], force)
    if run.up_to_date:
        return run.folder
    index = load_index(cfg)
    out = run.begin()
    runs = [(None, out)] + [(k, out / f"cv{k}") for k in folds]
    if force:
        for _, folder in runs:
            (folder / "stage.json").unlink(missing_ok=True)
    progress = Progress("stage 02", [len(pretraining_images(index, k, cfg.split.n_folds)[0]) for k, _ in runs])
    for i, (fold, folder) in enumerate(runs):
        train, val = pretraining_images(index, fold, cfg.split.n_folds)
        what = "the training split" if fold is None else f"cross-validation fold {fold}'s training women"
        progress.begin(i, f"{cfg.pretrain.method} on {len(train)} films of {what}")
        pretrain_one(cfg, train, val, folder, run, resume=resume, callbacks=callbacks, deterministic=deterministic)
    progress.end()
    if not _writes_files():
        return out  # the other processes of a DDP run: process 0 writes the figure and stage.json
    figures.pretrain_curves(pd.read_csv(out / "history.csv"), out / "pretrain_curves.png")
    return run.finish(folds=folds)


def _writes_files() -> bool:
    """Whether this process writes a stage's files: the only one, or rank 0 of a distributed run (whose process
    group Lightning may already have torn down, so the launcher's environment is read too)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank() == 0
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0)) or 0) == 0 and \
        int(os.environ.get("NODE_RANK", 0) or 0) == 0


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

    from mammo_utils.models import load_backbone
    from mammo_utils.runs.paths import how_to_run

    out = stage_dir(cfg, "pretrain")
    backbone = load_backbone(require(cfg, "pretrain", "backbone.pt"), hint=how_to_run(cfg, "pretrain"))
    index = load_index(cfg)
    index = index[index.split.isin(["train", "val"])]
    feats = embed_images(backbone, CachedImages(index).images)
    perplexity = float(max(2, min(30, (len(index) - 1) // 3)))
    xy = TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=cfg.seed).fit_transform(feats)
    labels = [label_name(a, m) for a, m in zip(index.abnormal, index.malignant, strict=True)]
    title = f"t-SNE of {cfg.pretrain.method} features (labels not used)"
    return figures.embedding_scatter(xy, labels, out / "tsne.png", title)


def view_pairs_figure(cfg: Config, n: int = 6) -> Path:
    """Pairs of contrastive views of a few training images (abnormal ones first)."""
    index = load_index(cfg)
    train = index[index.split == "train"].sort_values("abnormal", ascending=False).head(n)
    ds = CachedImages(train, transform=simclr_views(cfg.image_size_px, cfg.augment))
    torch.manual_seed(cfg.seed)
    pairs = [(v[0][0].numpy(), v[1][0].numpy()) for v in (ds[i][0] for i in range(len(ds)))]
    return figures.view_pairs(pairs, stage_dir(cfg, "pretrain") / "view_pairs.png")
