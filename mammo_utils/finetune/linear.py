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

import copy
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn

from mammo_utils.config import Config
from mammo_utils.evaluate.metrics import auc_or_half
from mammo_utils.finetune.full import FitResult, require_both_classes
from mammo_utils.finetune.loss import weighted_bce
from mammo_utils.models import Classifier, feature_dim, normalize
from mammo_utils.prepare.loaders import CachedImages
from mammo_utils.runs.devices import Placement, placement, prepare_input, prepare_model


def freeze_backbone(backbone: nn.Module) -> nn.Module:
    """Freeze a backbone for a linear probe: no gradient for any weight, and batch norm in eval mode, so it
    normalises with the running statistics it learnt instead of each batch's (which would change the
    features from batch to batch). Returns ``backbone``."""
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval()


@torch.no_grad()
def extract_features(backbone: nn.Module, images: torch.Tensor, where: Placement | None = None,
                     batch_size: int = 64) -> torch.Tensor:
    """Frozen-backbone features of (N, 1, S, S) images in [0, 1] → (N, 2048) float32 on the CPU.

    The backbone is frozen (:func:`freeze_backbone`): batch norm uses its stored statistics, so the features
    are those the head will see at test time. ``where`` sets device, precision and memory format (default:
    the CPU in fp32); the backbone is handed back on the CPU, contiguous.
    """
    where = where or Placement("cpu", torch.device("cpu"), "32-true", False)
    backbone = prepare_model(freeze_backbone(backbone), where)
    out = []
    for i in range(0, len(images), batch_size):
        with where.autocast():
            out.append(backbone(prepare_input(normalize(images[i : i + batch_size].float()), where)).float().cpu())
    backbone.to("cpu", memory_format=torch.contiguous_format)
    return torch.cat(out) if out else torch.zeros(0, feature_dim(backbone))


@dataclass
class LinearProbe:
    """A trained head: ``head`` maps raw features to one logit; ``history`` has epoch and val_auc."""

    head: nn.Linear
    best_epoch: int
    best_val_auc: float
    history: pd.DataFrame


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
    loss_fn = weighted_bce(train_y)
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
            auc = auc_or_half(val_y_np, head(z_val).squeeze(1).numpy())
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


def fit_linear(cfg: Config, backbone: torch.nn.Module, features: dict[str, torch.Tensor], train: pd.DataFrame,
               val: pd.DataFrame, seed: int) -> FitResult:
    """Train a logistic-regression head on the frozen backbone's features; plug it into ``Classifier(backbone)``.

    Args:
        features: image_id -> (2048,) feature of the frozen backbone (:func:`feature_table`).
        train, val: rows of the preprocessed index. seed: the head's initialisation.
    """
    f = cfg.finetune
    require_both_classes(train[cfg.task].to_numpy(), "linear probe")

    def stack(part: pd.DataFrame) -> torch.Tensor:
        return torch.stack([features[i] for i in part.image_id.astype(str)])

    probe = fit_linear_head(stack(train), torch.tensor(train[cfg.task].to_numpy()), stack(val),
                            torch.tensor(val[cfg.task].to_numpy()), epochs=f.linear_epochs, lr=f.linear_lr,
                            weight_decay=f.weight_decay, seed=seed)
    model = Classifier(copy.deepcopy(backbone))
    with torch.no_grad():
        model.head[-1].load_state_dict(probe.head.state_dict())
    history = probe.history.rename(columns={"epoch": "step"})
    return FitResult(model.eval(), f.linear_epochs, probe.best_epoch, probe.best_val_auc, history)


def feature_table(cfg: Config, backbone: torch.nn.Module, index: pd.DataFrame) -> dict[str, torch.Tensor]:
    """Frozen-backbone features of every image of ``index``, by image_id (computed once, then looked up)."""
    feats = extract_features(backbone, CachedImages(index, None).images, placement(cfg),
                             batch_size=2 * cfg.finetune.batch_size)
    return dict(zip(index.image_id.astype(str), feats, strict=True))
