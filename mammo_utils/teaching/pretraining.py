"""Reference solutions and check functions for the notebooks' exercises."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F


def nt_xent_reference(z0: torch.Tensor, z1: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    r"""NT-Xent (normalised temperature-scaled cross entropy), SimCLR's loss, written out.

    For :math:`2N` embeddings (two views of :math:`N` images), cosine similarities
    :math:`s_{ik} = z_i^\top z_k / (\lVert z_i \rVert \lVert z_k \rVert)`, each embedding's positive is the other
    view of the same image and every other embedding is a negative:
    :math:`\ell_i = -\log \frac{\exp(s_{i,p(i)}/\tau)}{\sum_{k \ne i} \exp(s_{ik}/\tau)}`, averaged over all
    :math:`2N` embeddings.

    Args:
        z0, z1: (N, D) projections of the first and second views.
        temperature: :math:`\tau`.
    """
    n = z0.shape[0]
    z = F.normalize(torch.cat([z0, z1]), dim=1)
    logits = z @ z.T / temperature
    logits = logits.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, positives)


def check_nt_xent(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], trials: int = 5) -> bool:
    """Compare ``fn(z0, z1, temperature)`` with lightly's ``NTXentLoss`` on random tensors; print PASS or FAIL."""
    from lightly.loss import NTXentLoss

    gen = torch.Generator().manual_seed(0)
    for trial in range(trials):
        n, d = int(torch.randint(2, 33, (1,), generator=gen)), int(torch.randint(2, 129, (1,), generator=gen))
        temperature = float(torch.empty(1).uniform_(0.05, 1.0, generator=gen))
        z0, z1 = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        expected = NTXentLoss(temperature=temperature)(z0, z1)
        try:
            got = fn(z0, z1, temperature)
        except NotImplementedError:
            print("NOT YET: your function raises NotImplementedError. Write it, then run this cell again.")
            return False
        if not torch.allclose(torch.as_tensor(got, dtype=expected.dtype), expected, rtol=1e-4, atol=1e-5):
            print(f"FAIL on trial {trial} (N={n}, D={d}, tau={temperature:.3f}): got {float(got):.5f}, "
                  f"lightly gives {float(expected):.5f}.")
            return False
    print(f"PASS: matches lightly's NTXentLoss on {trials} random batches.")
    return True
