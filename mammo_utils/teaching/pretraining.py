"""Checks of notebook 02's exercises (contrastive pretraining)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import check


@check("2.1 NT-Xent", hint="Normalise z0 and z1, stack them (2N rows), divide all pairwise dot products by the "
       "temperature, mask each row's similarity with itself, and take the cross entropy whose target for row i is "
       "its partner (i + N, or i - N).")
def check_nt_xent(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], trials: int = 5) -> str:
    """Compare ``fn(z0, z1, temperature)`` with lightly's ``NTXentLoss`` on random batches of random sizes."""
    from lightly.loss import NTXentLoss

    gen = torch.Generator().manual_seed(0)
    for trial in range(trials):
        n, d = int(torch.randint(2, 33, (1,), generator=gen)), int(torch.randint(2, 129, (1,), generator=gen))
        temperature = float(torch.empty(1).uniform_(0.05, 1.0, generator=gen))
        z0, z1 = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        expected = NTXentLoss(temperature=temperature)(z0, z1)
        got = fn(z0, z1, temperature)
        if got is None:
            raise NotImplementedError
        assert torch.allclose(torch.as_tensor(got, dtype=expected.dtype), expected, rtol=1e-4, atol=1e-5), (
            f"on trial {trial} (N={n}, D={d}, tau={temperature:.3f}) you got {float(got):.5f}, lightly "
            f"{float(expected):.5f}")
    return f"matches lightly's NTXentLoss on {trials} random batches."
