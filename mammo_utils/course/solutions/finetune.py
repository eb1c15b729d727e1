"""Reference solutions of notebook 03 (fine-tuning)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn as nn


def my_positive_class_weight(labels) -> float:
    """The weight of a positive image in the loss: negatives / positives among the training labels (0/1)."""
    labels = np.asarray(labels).astype(int)
    n_pos = labels.sum()
    return float((len(labels) - n_pos) / n_pos)


def my_freeze(backbone: nn.Module) -> nn.Module:
    """Freeze ``backbone`` for a linear probe: no weight trains, and batch norm uses its stored statistics."""
    for p in backbone.parameters():
        p.requires_grad = False
    backbone.eval()  # every BatchNorm layer (and anything else with a train/eval behaviour)
    return backbone


def my_training_step(model: nn.Module, optimizer: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
                     loss_fn: nn.Module) -> float:
    """One optimisation step on the batch (x, y); returns the batch's loss before the step."""
    optimizer.zero_grad()  # gradients add up in .grad until they are cleared
    loss = loss_fn(model(x).squeeze(1), y.float())
    loss.backward()
    optimizer.step()
    return loss.item()


def my_label_subsets(images: pd.DataFrame, fractions, seed: int = 0) -> dict[float, set]:
    """For each fraction, the set of women (patient_id) whose labels are kept: stratified by the woman's worst
    label (0 normal, 1 benign, 2 malignant), drawn with ``seed``, nested across fractions."""
    worst = (images.abnormal.astype(int) + images.malignant.astype(int)).groupby(images.patient_id).max()
    rng = np.random.default_rng(seed)
    orders = [rng.permutation(sorted(worst.index[worst == s])) for s in sorted(worst.unique())]  # one order each
    return {f: {w for order in orders for w in order[: max(1, round(len(order) * f))]} for f in fractions}


RUN_ABLATION = True
