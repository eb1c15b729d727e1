"""A CNN that memorises: trained from random weights on raw pixels until it fits its training items.

A frozen backbone with a linear head can only exploit a leak its features already expose, and early stopping on a
validation set keeps a network from memorising. A reviewer who asks "can this protocol pay?" trains the other
kind of model: one that fits its training set, twins included, as an over-trained network does (Zhang et al., ICLR
2017: a CNN fits even random labels). This one is small on purpose, so that it can run on every arm on a CPU:
three blocks of 3x3 convolution, batch norm, ReLU and 2x2 max-pooling (``width``, 2 ``width`` and 4 ``width``
channels) and one linear layer, on the items' pixels at ``protocols.pixels_px``, plain PyTorch (no augmentation:
memorising is the point).

It trains with Adam, a class-balanced loss, until its training accuracy reaches ``fit_accuracy`` (measured after
every epoch, in eval mode) or ``max_epochs``; its steps and epochs are recorded. The threshold is Youden's J on
validation at the last epoch; A4 and A5 choose the epoch and threshold on test instead, among every epoch's test
predictions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn as nn
import torch.nn.functional as F

from mammo_utils.evaluate.metrics import choose_threshold
from mammo_utils.protocols import probe, splits
from mammo_utils.protocols.crossval import ROW_COLUMNS, ArmRun, fold_plans, fold_rows
from mammo_utils.runs.trainer import seed_everything


def memoriser(size_px: int, width: int = 16) -> nn.Sequential:
    """The small CNN: (B, 1, size_px, size_px) in [0, 1] -> (B,) logits (size_px a multiple of 8)."""
    blocks, c_in = [], 1
    for c_out in (width, 2 * width, 4 * width):
        blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(), nn.MaxPool2d(2)]
        c_in = c_out
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(c_in * (size_px // 8) ** 2, 1), nn.Flatten(0))


@dataclass(frozen=True)
class CnnSettings:
    """The memorising CNN's fixed settings (``protocols.cnn_*``)."""

    width: int = 16
    fit_accuracy: float = 0.99
    max_epochs: int = 150
    batch_size: int = 64
    lr: float = 3e-3


@dataclass
class Fit:
    """One training: each epoch's test probabilities, the last epoch's validation probabilities, and how long it
    took to fit (``epochs``, ``steps``, the final ``train_accuracy``)."""

    test_path: list[np.ndarray]
    val: np.ndarray
    epochs: int
    steps: int
    train_accuracy: float


@torch.no_grad()
def _probabilities(model: nn.Module, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    model.eval()
    out = [torch.sigmoid(model(x[i : i + batch])) for i in range(0, len(x), batch)]
    model.train()
    return torch.cat(out).numpy() if out else np.zeros(0)


def fit_until_memorised(x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor, x_test: torch.Tensor,
                        settings: CnnSettings, seed: int) -> Fit:
    """Train :func:`memoriser` on ``(x_train, y_train)`` until it fits them; (N, 1, S, S) pixels in [0, 1]."""
    seed_everything(seed)
    model = memoriser(x_train.shape[-1], settings.width)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    y = torch.as_tensor(np.asarray(y_train), dtype=torch.float32)
    pos = float(y.sum())
    pos_weight = torch.tensor((len(y) - pos) / pos if pos else 1.0)
    generator = torch.Generator().manual_seed(seed)
    test_path, steps, accuracy = [], 0, 0.0
    for _ in range(settings.max_epochs):
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), settings.batch_size):
            b = order[i : i + settings.batch_size]
            if len(b) < 2:  # batch norm needs two items
                continue
            loss = F.binary_cross_entropy_with_logits(model(x_train[b]), y[b], pos_weight=pos_weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        accuracy = float(((_probabilities(model, x_train) >= 0.5) == y.numpy().astype(bool)).mean())
        test_path.append(_probabilities(model, x_test))
        if accuracy >= settings.fit_accuracy:
            break
    return Fit(test_path, _probabilities(model, x_val), len(test_path), steps, accuracy)


def fold_fit(items: pd.DataFrame, pixels: np.ndarray, role: pd.Series, settings: CnnSettings, seed: int) -> Fit:
    """Train on one fold's training items (``pixels`` in the items' order, (N, S, S))."""
    x = torch.from_numpy(np.array(pixels, dtype=np.float32))[:, None]
    part = {r: np.array(role == r) for r in (splits.TRAIN, splits.VAL, splits.TEST)}  # writable, for torch
    return fit_until_memorised(x[part[splits.TRAIN]], items["label"].to_numpy()[part[splits.TRAIN]],
                               x[part[splits.VAL]], x[part[splits.TEST]], settings, seed)


def run_cnn(arms: list, items: pd.DataFrame, pixels: np.ndarray, seed: int, n_folds: int, val_share: float,
            settings: CnnSettings) -> dict[str, ArmRun]:
    """One cross-validation of the CNN (every item tested exactly once), read by one or more arms that share its
    split and differ only in what they choose on test (A0 and A4; A2 K=top and A5).

    Args:
        arms: the arms (same unit and items); items: with the arms' ``fold``; pixels: (N, S, S) in the items'
            order. seed: validation draw and training. n_folds, val_share: the split. settings: the CNN's.

    Returns:
        ``{arm name: ArmRun}``.
    """
    items = items.reset_index(drop=True)
    y = items["label"].to_numpy().astype(int)
    parts: dict[str, list[pd.DataFrame]] = {a.name: [] for a in arms}
    runs = {a.name: ArmRun(pd.DataFrame(columns=ROW_COLUMNS)) for a in arms}
    for plan in fold_plans(arms[0], items, seed, n_folds, val_share):
        k, role, leak = plan.k, plan.role, plan.leak
        te = (role == splits.TEST).to_numpy()
        fit = fold_fit(items, pixels, role, settings, seed)
        done = {"epochs": fit.epochs, "steps": fit.steps, "train_accuracy": fit.train_accuracy}
        for arm in arms:
            if arm.select_on_test:
                choice = probe.choose_on_test({seed: {e + 1: {"test": p} for e, p in enumerate(fit.test_path)}}, y[te])
                probability, threshold, chosen = fit.test_path[choice.iterations - 1], choice.threshold, choice
                fold = {"iterations": chosen.iterations, "chosen_on": "test", "n_configurations": len(fit.test_path)}
            else:
                probability = fit.test_path[-1]
                threshold = choose_threshold(y[(role == splits.VAL).to_numpy()], fit.val)
                fold = {"iterations": fit.epochs, "chosen_on": "validation", "n_configurations": 1}
            parts[arm.name].append(fold_rows(items[te], probability, threshold))
            runs[arm.name].folds.append({"fold": k, **leak, "seed": seed, "threshold": threshold, **fold, **done})
    for arm in arms:
        if parts[arm.name]:
            runs[arm.name].rows = pd.concat(parts[arm.name], ignore_index=True)
    return runs
