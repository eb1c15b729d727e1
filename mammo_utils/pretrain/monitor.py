r"""Is pretraining learning? Three measurements beside their trivial levels, logged every epoch.

- **The loss against its constant-output level.** If the network gave every view the same vector, every
  candidate of the NT-Xent softmax would score alike and the loss would be :math:`\ln(2N - 1)` for a batch of N
  pairs (:math:`\ln(K + 1)` for MoCo with a queue of K): :func:`constant_output_loss`. A loss that does not end
  clearly below it has learnt nothing.
- **The pretext accuracy**: how often a view's partner is the most similar of its :math:`2N - 1` candidates
  (:func:`pretext_top1`); chance is :math:`1 / (2N - 1)`.
- **The kNN monitor** (Wu et al. 2018; lightly's benchmarks): crops of the validation women are classified
  lesion / normal by a vote of their ``k`` nearest crops of the pretraining women in feature space
  (:func:`knn_balanced_accuracy`), before training (the untrained value) and after every epoch. No weight is
  trained on these labels, so a rise means the features themselves have come to separate lesion from normal
  tissue. Chance is 0.5.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from mammo_utils.models import normalize


def constant_output_loss(n_candidates: int) -> float:
    """The NT-Xent / InfoNCE loss of a network that outputs one vector for everything: ln(candidates), where a
    view's candidates are its partner and its negatives (SimCLR: 2N - 1; MoCo: K + 1)."""
    return math.log(n_candidates)


@torch.no_grad()
def pretext_top1(z0: torch.Tensor, z1: torch.Tensor) -> float:
    """SimCLR's pretext task as an accuracy: the share of the 2N views whose partner is the most similar (cosine)
    of the other 2N - 1. ``z0``, ``z1``: (N, D) projections of the two views, row i of each from image i."""
    z = F.normalize(torch.cat([z0, z1]).float(), dim=1)
    sim = z @ z.T
    sim.fill_diagonal_(-float("inf"))
    n = len(z0)
    partner = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return float((sim.argmax(1) == partner).float().mean())


def knn_balanced_accuracy(bank_features: np.ndarray, bank_labels: np.ndarray, query_features: np.ndarray,
                          query_labels: np.ndarray, k: int = 10) -> float:
    """Balanced accuracy of a k-nearest-neighbour vote in feature space (cosine distance, closer counts more).

    Args:
        bank_features, query_features: (N, D) and (M, D) features.
        bank_labels, query_labels: (N,) and (M,) class labels.
        k: neighbours (capped at the bank's size).

    Returns:
        Balanced accuracy on the queries; NaN when they hold one class only. Chance is 0.5.
    """
    if len(np.unique(query_labels)) < 2 or len(np.unique(bank_labels)) < 2:
        return float("nan")
    k = max(1, min(k, len(bank_labels)))
    knn = KNeighborsClassifier(n_neighbors=k, metric="cosine", weights="distance").fit(bank_features, bank_labels)
    return float(balanced_accuracy_score(query_labels, knn.predict(query_features)))


class KnnMonitor:
    """The kNN monitor's labelled crops: a bank (the pretraining women's) and queries (the validation women's).

    Args:
        bank, queries: (N, 1, S, S) and (M, 1, S, S) crops in [0, 1] (float16 is fine).
        bank_labels, query_labels: their labels (1 lesion, 0 normal).
        k: neighbours of the vote.
    """

    def __init__(self, bank: torch.Tensor, bank_labels: np.ndarray, queries: torch.Tensor,
                 query_labels: np.ndarray, k: int = 10) -> None:
        self.bank, self.queries, self.k = bank, queries, k
        self.bank_labels, self.query_labels = np.asarray(bank_labels), np.asarray(query_labels)

    @property
    def usable(self) -> bool:
        """Both sides hold both classes (a dataset without located findings has no crop task to monitor)."""
        return len(np.unique(self.bank_labels)) == 2 and len(np.unique(self.query_labels)) == 2

    @torch.no_grad()
    def score(self, backbone: torch.nn.Module, batch_size: int = 256) -> float:
        """The balanced accuracy of the vote with ``backbone``'s features (run in eval mode, left as found)."""
        if not self.usable:
            return float("nan")
        was_training = backbone.training
        backbone.eval()
        device = next(backbone.parameters()).device

        def embed(x: torch.Tensor) -> np.ndarray:
            out = [backbone(normalize(x[i : i + batch_size].float().to(device))).float().cpu()
                   for i in range(0, len(x), batch_size)]
            return F.normalize(torch.cat(out), dim=1).numpy()

        score = knn_balanced_accuracy(embed(self.bank), self.bank_labels, embed(self.queries), self.query_labels,
                                      self.k)
        backbone.train(was_training)
        return score
