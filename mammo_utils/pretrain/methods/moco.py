r"""MoCo v2 (He et al., CVPR 2020; Chen et al. 2020): many negatives without a large batch.

SimCLR's negatives are the rest of the batch, so a laptop's batch of 32 gives each view 62. MoCo keeps a
**queue** of the projections of earlier batches as negatives, and computes them with a **momentum encoder**,
a slowly moving average of the trained one (:math:`\theta_k \leftarrow m\,\theta_k + (1 - m)\,\theta_q`), so
the queued keys stay consistent with each other as training goes on. The query view goes through the trained
encoder, the key view through the momentum encoder (no gradient), and the same InfoNCE loss as SimCLR's
NT-Xent scores each query against its key and the queue.

Built from lightly's parts: ``MoCoProjectionHead`` (v2: a two-layer MLP), ``update_momentum`` with a cosine
momentum schedule, ``batch_shuffle`` for the keys across GPUs (MoCo's shuffled batch norm; a single device
has nothing to shuffle across), and ``NTXentLoss(memory_bank_size=...)`` as the queue.

A queue holds keys of earlier batches, so a crop's region may meet an older key of itself (or of an overlapping
region of the same film) among its negatives: a false negative, the price of many negatives at a small batch.
Pretraining draws new regions every epoch, so an identical key is rare; overlapping ones are not.
"""

from __future__ import annotations

import copy

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import MoCoProjectionHead
from lightly.models.utils import batch_shuffle, batch_unshuffle, deactivate_requires_grad, update_momentum
from lightly.utils.scheduler import cosine_schedule

from mammo_utils.models import FEATURE_DIMS
from mammo_utils.pretrain.methods.base import ContrastiveModule
from mammo_utils.pretrain.monitor import constant_output_loss


def queue_size(wanted: int, batch_size: int) -> int:
    """The memory bank's length: ``wanted``, rounded down to whole batches (at least one)."""
    return max(batch_size, int(wanted) // batch_size * batch_size)


class MoCoModule(ContrastiveModule):
    """Query encoder + MoCo v2 head, a momentum copy of both, and a queue of negatives.

    Args:
        hidden_dim, output_dim: projection head sizes (MoCo v2: 2048 and 128).
        temperature: InfoNCE temperature (MoCo v2: 0.2).
        memory_bank_size: queue length (MoCo: 65,536 on ImageNet); see :func:`queue_size`.
        momentum: start value of the momentum :math:`m`, raised to 1 on a cosine schedule over training
            (lightly's MoCo example; MoCo v2 keeps 0.999).
        backbone, crop_size_px, views, optimizer, lr, weight_decay, warmup_steps, batch_size, seed, channels_last:
            see :class:`~mammo_utils.pretrain.methods.base.ContrastiveModule`.
    """

    def __init__(self, backbone: str = "resnet50", crop_size_px: int = 64, views: dict | None = None,
                 hidden_dim: int = 2048, output_dim: int = 128, temperature: float = 0.2,
                 memory_bank_size: int = 4096, momentum: float = 0.996, optimizer: str = "adamw",
                 lr: float = 1e-3, weight_decay: float = 1e-6, warmup_steps: int = 0, batch_size: int = 64,
                 seed: int = 0, channels_last: bool = False) -> None:
        super().__init__(backbone)
        self.save_hyperparameters()
        self.projection_head = MoCoProjectionHead(FEATURE_DIMS[backbone], hidden_dim, output_dim)
        self.backbone_momentum = copy.deepcopy(self.backbone)
        self.projection_head_momentum = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.backbone_momentum)
        deactivate_requires_grad(self.projection_head_momentum)
        # The queue; with DDP the keys of every GPU are gathered before they are queued.
        self.criterion = NTXentLoss(temperature=temperature, memory_bank_size=(memory_bank_size, output_dim),
                                    gather_distributed=True)
        if channels_last:
            self.to(memory_format=torch.channels_last)

    @classmethod
    def settings(cls, cfg) -> dict:
        p = cfg.pretrain
        return {**super().settings(cfg), "momentum": p.momentum,
                "memory_bank_size": queue_size(p.memory_bank_size, p.batch_size)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images (B, 1, H, W) in [0, 1] → query projections (B, output_dim)."""
        return self.projection_head(self.embed(x))

    @torch.no_grad()
    def forward_momentum(self, x: torch.Tensor) -> torch.Tensor:
        """Key projections from the momentum encoder (no gradient)."""
        distributed = self._trainer is not None and self._trainer.world_size > 1  # None: used outside a Trainer
        x, shuffle = batch_shuffle(self._prep(x), distributed=distributed)
        keys = self.projection_head_momentum(self.backbone_momentum(x))
        return batch_unshuffle(keys, shuffle, distributed=distributed)

    def current_momentum(self) -> float:
        """The momentum :math:`m` of this step: ``momentum`` raised to 1 on a cosine schedule over training
        (``momentum`` itself outside a Trainer)."""
        if self._trainer is None:
            return float(self.hparams.momentum)
        steps = max(2, int(self._trainer.estimated_stepping_batches))
        return float(cosine_schedule(self.global_step, steps, self.hparams.momentum, 1.0))

    def contrastive_step(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, float]:
        m = self.current_momentum()
        update_momentum(self.backbone, self.backbone_momentum, m=m)
        update_momentum(self.projection_head, self.projection_head_momentum, m=m)
        q, k = self(x0), self.forward_momentum(x1)
        top1 = queue_top1(q, k, self.criterion.memory_bank.bank)  # before the loss adds these keys to the queue
        return self.criterion(q, k), top1

    def constant_output_loss(self) -> float:
        return constant_output_loss(self.hparams.memory_bank_size + 1)


@torch.no_grad()
def queue_top1(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor) -> float:
    """MoCo's pretext task as an accuracy: the share of queries whose own key is more similar (cosine) than every
    key of the queue. ``q``, ``k``: (B, D); ``queue``: (K, D), lightly's memory bank."""
    q, k = torch.nn.functional.normalize(q.float(), dim=1), torch.nn.functional.normalize(k.float(), dim=1)
    queue = torch.nn.functional.normalize(queue.float().to(q.device), dim=1)
    positive = (q * k).sum(1)
    return float((positive > (q @ queue.T).max(1).values).float().mean())
