"""The loss both fine-tuning protocols train with: binary cross entropy with the positive class weighted."""

from __future__ import annotations

import numpy as np
import torch


def positive_class_weight(labels: np.ndarray | torch.Tensor) -> float:
    """The weight of the positive class: negatives / positives among the training images.

    With it the positives' total weight equals the negatives', so a model cannot lower the loss by answering
    "negative" everywhere, the cheap way out on data where most films are normal.
    """
    labels = np.asarray(labels).astype(int)
    n_pos = int(labels.sum())
    return (len(labels) - n_pos) / max(n_pos, 1)


def weighted_bce(labels: np.ndarray | torch.Tensor) -> torch.nn.BCEWithLogitsLoss:
    """``BCEWithLogitsLoss`` whose ``pos_weight`` is :func:`positive_class_weight` of the training labels."""
    return torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([positive_class_weight(labels)]))
