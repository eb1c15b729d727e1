"""Reference solutions of notebook 02 (contrastive pretraining)."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def my_nt_xent(z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    r"""NT-Xent (normalised temperature-scaled cross entropy), SimCLR's loss, written out.

    For :math:`2N` embeddings (two views of :math:`N` images), cosine similarities
    :math:`s_{ik} = z_i^\top z_k / (\lVert z_i \rVert \lVert z_k \rVert)`, each embedding's positive is the other
    view of the same image and every other embedding is a negative:
    :math:`\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}`, averaged over all
    :math:`2N` embeddings.
    """
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def my_random_embedding_loss(n_images: int, temperature: float) -> float:
    """Expected NT-Xent of random, unrelated embeddings: every similarity is about 0, so each view's softmax is
    uniform over its 2N - 1 candidates (the temperature divides zeros and drops out)."""
    return math.log(2 * n_images - 1)


def my_training_step(module, optimizer: torch.optim.Optimizer, x0: torch.Tensor, x1: torch.Tensor) -> float:
    """One optimisation step on a batch of view pairs; returns the loss before the step."""
    optimizer.zero_grad()
    loss = module.contrastive_loss(x0, x1)
    loss.backward()
    optimizer.step()
    return loss.item()


def my_knn_balanced_accuracy(bank_features: np.ndarray, bank_labels: np.ndarray, query_features: np.ndarray,
                             query_labels: np.ndarray, k: int = 10) -> float:
    """Balanced accuracy of a cosine-similarity kNN vote, each neighbour weighted by 1 / (1 - similarity)."""
    bank = bank_features / np.linalg.norm(bank_features, axis=1, keepdims=True)
    query = query_features / np.linalg.norm(query_features, axis=1, keepdims=True)
    similarity = query @ bank.T
    nearest = np.argsort(-similarity, axis=1)[:, :k]
    weights = 1 / np.maximum(1 - np.take_along_axis(similarity, nearest, axis=1), 1e-12)
    classes = np.unique(bank_labels)
    votes = np.stack([(weights * (bank_labels[nearest] == c)).sum(axis=1) for c in classes], axis=1)
    predicted = classes[votes.argmax(axis=1)]
    return float(np.mean([np.mean(predicted[query_labels == c] == c) for c in np.unique(query_labels)]))


RUN_ABLATION = True  # train the variant (a few minutes at demo) and compare it with the first run
