r"""SimCLR (Chen et al., ICML 2020): the paper's method.

Two random views of each crop go through the backbone :math:`f` and a projection head :math:`g`,
:math:`z = g(f(x))`, and the NT-Xent loss pulls each view towards its partner and away from the other
:math:`2N - 2` views of the batch: for a batch of :math:`N` crops and positive pair :math:`(i, j)`,

.. math:: \ell_{i,j} = -\log \frac{\exp(\mathrm{sim}(z_i, z_j)/\tau)}{\sum_{k \ne i} \exp(\mathrm{sim}(z_i, z_k)/\tau)}

The negatives are the rest of the batch, so SimCLR wants large batches (4,096 in the paper; 128 on a laptop here,
each view then has 254 negatives). The head is thrown away after pretraining: :math:`f`'s features transfer better
than :math:`g`'s (SimCLR, Sec. 4.2). Loss and head are lightly's (``NTXentLoss``, ``SimCLRProjectionHead``).
"""

from __future__ import annotations

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead

from mammo_utils.models import FEATURE_DIMS
from mammo_utils.pretrain.methods.base import ContrastiveModule
from mammo_utils.pretrain.monitor import constant_output_loss, pretext_top1


class SimCLRModule(ContrastiveModule):
    """Backbone + SimCLR projection head, trained with NT-Xent.

    Args:
        hidden_dim, output_dim: projection head sizes (SimCLR: 2048 and 128).
        temperature: NT-Xent temperature :math:`\tau`.
        backbone, crop_size_px, views, optimizer, lr, weight_decay, warmup_steps, batch_size, seed, channels_last:
            see :class:`~mammo_utils.pretrain.methods.base.ContrastiveModule`.
    """

    def __init__(self, backbone: str = "resnet50", crop_size_px: int = 64, views: dict | None = None,
                 hidden_dim: int = 2048, output_dim: int = 128, temperature: float = 0.2, optimizer: str = "adamw",
                 lr: float = 1e-3, weight_decay: float = 1e-6, warmup_steps: int = 0, batch_size: int = 64,
                 seed: int = 0, channels_last: bool = False) -> None:
        super().__init__(backbone)
        self.save_hyperparameters()
        self.projection_head = SimCLRProjectionHead(FEATURE_DIMS[backbone], hidden_dim, output_dim)
        # gather_distributed: with DDP, negatives come from every GPU's batch, as in SimCLR.
        self.criterion = NTXentLoss(temperature=temperature, gather_distributed=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → projections z (B, output_dim)."""
        return self.projection_head(self.embed(x))

    def contrastive_step(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, float]:
        z0, z1 = self(x0), self(x1)
        return self.criterion(z0, z1), pretext_top1(z0, z1)

    def constant_output_loss(self) -> float:
        world = self.trainer.world_size if self._trainer is not None else 1
        return constant_output_loss(2 * self.hparams.batch_size * world - 1)
