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
import torch.nn.functional as F

from mammo_utils.config import Config
from mammo_utils.evaluate.metrics import aucs_or_half
from mammo_utils.finetune.full import FitResult, require_both_classes
from mammo_utils.finetune.loss import positive_class_weight
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
    fits = torch.ones(1, len(train_y), dtype=torch.bool)
    return fit_linear_heads(train_x, train_y, fits, val_x, val_y, epochs, lr, weight_decay, [seed])[0]


def fit_linear_heads(
    x: torch.Tensor,
    y: torch.Tensor,
    fits: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    seeds: list[int] | tuple[int, ...] = (0,),
) -> list[LinearProbe]:
    """K linear probes trained side by side: probe k is :func:`fit_linear_head` on the rows ``fits[k]`` of ``x``.

    A label-efficiency sweep trains dozens of probes on subsets of the same crops (each fraction of the women,
    each draw), all scored on the same validation crops. One full-batch step of one probe is a few hundred
    microseconds, most of it overhead; stacked, the K probes take their steps together (31 probes of the MIAS crop
    task 6 times faster). Nothing is shared but the arithmetic: each probe standardises with its own rows' mean and
    SD, weights its positives by its own class ratio, starts from ``nn.Linear`` seeded with its own seed, and keeps
    its own best epoch. AdamW's update is elementwise, so K heads in one tensor with the sum of their losses step as
    K separate heads would, to rounding (the tests compare them).

    Args:
        x: (N, D) training features; y: (N,) labels 0/1.
        fits: (K, N) boolean, the rows each probe trains on (both classes in each).
        val_x, val_y: the validation features and labels, shared.
        epochs, lr, weight_decay: as :func:`fit_linear_head`.
        seeds: K seeds of the heads' initialisations.

    Returns:
        K probes, in the order of ``fits``.
    """
    fits = torch.as_tensor(fits, dtype=torch.bool).reshape(len(seeds), -1)
    n_heads, dim = len(seeds), x.shape[1]
    rows = [torch.nonzero(f).squeeze(1) for f in fits]
    stats = [(x[r].mean(0), x[r].std(0, unbiased=False).clamp_min(1e-6)) for r in rows]
    mean, std = torch.stack([m for m, _ in stats]), torch.stack([s for _, s in stats])  # (K, D)
    # Probe k sees (x - mean_k) / std_k. Written as ((x - c) - (mean_k - c)) / std_k, with c the mean of all the
    # rows, every probe's logits for every row come from one matrix product; centring on c first keeps the
    # subtraction of each probe's own mean away from large numbers.
    centre = x.mean(0)
    x_c, val_c, shift = x - centre, val_x - centre, mean - centre

    def logits(data: torch.Tensor) -> torch.Tensor:  # (rows, D) -> (K, rows)
        scale = w / std
        return (data @ scale.T).T - (shift * scale).sum(1, keepdim=True) + b[:, None]

    target, weight = y.float().expand(n_heads, -1), fits.float()
    pos_weight = torch.tensor([[positive_class_weight(y[r].numpy())] for r in rows])  # (K, 1)
    heads = []
    for seed in seeds:  # the same initial weights as one nn.Linear seeded alone
        torch.manual_seed(seed)
        heads.append(nn.Linear(dim, 1))
    w = nn.Parameter(torch.cat([h.weight.detach() for h in heads]).clone())  # (K, D)
    b = nn.Parameter(torch.cat([h.bias.detach() for h in heads]).clone())  # (K,)
    opt = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)
    val_y_np = val_y.numpy()
    best_auc = np.full(n_heads, -1.0)
    best_epoch = np.full(n_heads, -1)
    best_w, best_b = w.detach().clone(), b.detach().clone()
    aucs, losses = [], []
    for _ in range(max(1, epochs)):
        opt.zero_grad()
        per_row = F.binary_cross_entropy_with_logits(logits(x_c), target, pos_weight=pos_weight, reduction="none")
        loss = (per_row * weight).sum(1) / weight.sum(1)  # each probe's mean over its own rows
        loss.sum().backward()
        opt.step()
        with torch.no_grad():
            auc = aucs_or_half(val_y_np, logits(val_c).numpy())
            better = auc > best_auc  # strictly better: ties keep the earlier, simpler model
            best_auc[better], best_epoch[better] = auc[better], len(aucs)
            keep = torch.from_numpy(better)
            best_w[keep], best_b[keep] = w[keep], b[keep]
        aucs.append(auc)
        losses.append(loss.detach().numpy().copy())
    aucs, losses = np.stack(aucs), np.stack(losses)
    probes = []
    for k in range(n_heads):
        # Fold the standardisation into the weights: w·(x - m)/s + b = (w/s)·x + (b - (w/s)·m).
        head = nn.Linear(dim, 1)
        with torch.no_grad():
            scaled = best_w[k] / std[k]
            head.weight.copy_(scaled[None])
            head.bias.copy_(best_b[k : k + 1] - (scaled * mean[k]).sum())
        history = pd.DataFrame({"epoch": np.arange(len(aucs)), "val_auc": aucs[:, k], "train_loss": losses[:, k]})
        probes.append(LinearProbe(head=head, best_epoch=int(best_epoch[k]), best_val_auc=float(best_auc[k]),
                                  history=history))
    return probes


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
