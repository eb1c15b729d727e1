r"""SimCLR (Chen et al., ICML 2020): the paper's method.

Two random views of each image go through the backbone :math:`f` and a projection head :math:`g`,
:math:`z = g(f(x))`, and the NT-Xent loss pulls each view towards its partner and away from the other
:math:`2N - 2` views of the batch: for a batch of :math:`N` images and positive pair :math:`(i, j)`,

.. math:: \ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}{\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k)/\tau)}

The negatives are the rest of the batch, so SimCLR wants large batches (4,096 in the paper); at a laptop's 32
each view has 62 negatives. The head is thrown away after pretraining: :math:`f`'s features transfer better
than :math:`g`'s (SimCLR, Sec. 4.2). Loss and head are lightly's (``NTXentLoss``, ``SimCLRProjectionHead``).
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from mammo_utils.models import FEATURE_DIM
from mammo_utils.pretrain.methods.base import ContrastiveModule


class SimCLRModule(ContrastiveModule):
    """ResNet-50 backbone + SimCLR projection head, trained with NT-Xent; kNN monitor on validation.

    Args:
        hidden_dim, output_dim: projection head sizes (SimCLR: 2048 and 128).
        temperature: NT-Xent temperature :math:`\tau`.
        optimizer, lr, weight_decay, warmup_epochs, batch_size, knn_k, channels_last: see
            :class:`~mammo_utils.pretrain.methods.base.ContrastiveModule`.
    """

    def __init__(self, hidden_dim: int = 2048, output_dim: int = 128, temperature: float = 0.2,
                 optimizer: str = "adamw", lr: float = 1e-3, weight_decay: float = 1e-6, warmup_epochs: int = 0,
                 batch_size: int = 64, knn_k: int = 10, channels_last: bool = False) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.projection_head = SimCLRProjectionHead(FEATURE_DIM, hidden_dim, output_dim)
        # gather_distributed: with DDP, negatives come from every GPU's batch, as in SimCLR.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → projections z (B, output_dim)."""
        return self.projection_head(self.embed(x))

    def contrastive_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.criterion(self(x0), self(x1))
