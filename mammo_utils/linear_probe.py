"""Linear probe on frozen features: the backbone runs once per image, only the head trains.

A linear probe measures what the features already know (Kolesnikov et al. 2019; SimCLR's linear evaluation).
With the backbone frozen and in eval mode, its features do not change between epochs, so computing them
once and training the head on the feature tensor gives the same model as a loop over images, at the cost of
one forward pass instead of one per epoch: on a laptop CPU this is what makes a label-efficiency sweep
affordable. There is no augmentation (features of augmented views would have to be recomputed each epoch);
that is the standard linear-evaluation recipe too. The head is logistic regression on standardised features
with the positive class weighted, trained full-batch; the epoch kept is the one with the best validation
ROC AUC, as for full fine-tuning. The standardisation is folded into the head's weights afterwards, so the
saved head plugs into :class:`~mammo_utils.models.Classifier` unchanged.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
from sklearn.metrics import roc_auc_score

from .config import Config
from .models import FEATURE_DIM, normalize
from .training import resolve_accelerator, resolve_precision, use_channels_last


def compute_device(cfg: Config) -> torch.device:
    """The device the sweep's small computations run on (one GPU when there is one, else the CPU)."""
    return torch.device("cuda" if resolve_accelerator(cfg) == "gpu" and torch.cuda.is_available() else "cpu")


def autocast_dtype(cfg: Config) -> torch.dtype | None:
    """The autocast dtype matching the run's Lightning precision (None for full precision)."""
    precision = resolve_precision(cfg)
    if precision.startswith("bf16"):
        return torch.bfloat16
    if precision.startswith("16"):
        return torch.float16
    return None


def autocast(device: torch.device, dtype: torch.dtype | None):
    """``torch.autocast`` for ``dtype``, or a no-op context for full precision."""
    return torch.autocast(device.type, dtype=dtype) if dtype is not None else contextlib.nullcontext()


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, cfg: Config, batch_size: int = 64) -> torch.Tensor:
    """Frozen-backbone features of (N, 1, S, S) images in [0, 1] → (N, 2048) float32 on the CPU.

    The backbone is put in eval mode: batch-norm uses its stored statistics, so the features are those the
    head will see at test time.
    """
    device, dtype = compute_device(cfg), autocast_dtype(cfg)
    backbone = backbone.to(device).eval()
    channels_last = use_channels_last(cfg)
    if channels_last:
        backbone = backbone.to(memory_format=torch.channels_last)
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i : i + batch_size].float().to(device))
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(device, dtype):
            out.append(backbone(x).float().cpu())
    backbone.to(memory_format=torch.contiguous_format)
    return torch.cat(out) if out else torch.zeros(0, FEATURE_DIM)


@dataclass
class LinearProbe:
    """A trained head: ``head`` maps raw features to one logit; ``history`` has epoch and val_auc."""

    head: nn.Linear
    best_epoch: int
    best_val_auc: float
    history: pd.DataFrame


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    return float(roc_auc_score(y, score)) if len(np.unique(y)) > 1 else 0.5


def fit_linear_head(
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seed: int = 0,
) -> LinearProbe:
    """Weighted logistic regression on features, full-batch AdamW; keeps the epoch with the best val ROC AUC.

    Args:
        train_x, val_x: (N, D) features. train_y, val_y: (N,) labels 0/1 (both classes in train).
        epochs: full-batch steps; lr, weight_decay: AdamW settings on standardised features.
        seed: seed of the head's initialisation.

    Returns:
        The head (standardisation folded in) with its validation history.
    """
    torch.manual_seed(seed)
    mean, std = train_x.mean(0), train_x.std(0, unbiased=False).clamp_min(1e-6)
    z_train, z_val = (train_x - mean) / std, (val_x - mean) / std
    y = train_y.float()
    n_pos = float(y.sum())
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([(len(y) - n_pos) / max(n_pos, 1.0)]))
    head = nn.Linear(train_x.shape[1], 1)
    opt = torch.optim.AdamW(head.parameters(), lr=lr, weight_decay=weight_decay)
    val_y_np = val_y.numpy()
    best = (-1.0, -1, {k: v.clone() for k, v in head.state_dict().items()})
    rows = []
    for epoch in range(max(1, epochs)):
        opt.zero_grad()
        loss = loss_fn(head(z_train).squeeze(1), y)
        loss.backward()
        opt.step()
        with torch.no_grad():
            auc = _auc(val_y_np, head(z_val).squeeze(1).numpy())
        rows.append({"epoch": epoch, "val_auc": auc, "train_loss": float(loss.detach())})
        if auc > best[0]:  # strictly better: ties keep the earlier, simpler model
            best = (auc, epoch, {k: v.clone() for k, v in head.state_dict().items()})
    head.load_state_dict(best[2])
    # Fold the standardisation into the weights: w·(x - m)/s + b = (w/s)·x + (b - (w/s)·m).
    with torch.no_grad():
        w = head.weight / std
        head.bias.copy_(head.bias - (w * mean).sum(1))
        head.weight.copy_(w)
    return LinearProbe(head=head, best_epoch=best[1], best_val_auc=best[0], history=pd.DataFrame(rows))


@torch.no_grad()
def head_probabilities(head: nn.Linear, features: torch.Tensor) -> np.ndarray:
    """Probability of the positive class from raw features."""
    return torch.sigmoid(head(features).squeeze(1)).numpy() if len(features) else np.zeros(0)
