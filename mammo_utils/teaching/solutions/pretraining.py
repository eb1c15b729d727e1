"""Reference solutions of notebook 02 (contrastive pretraining)."""

from __future__ import annotations

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
