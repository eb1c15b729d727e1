"""The two SimCLR views of a one-channel mammogram.

SimCLR (Chen et al., 2020) learns by making two random views of one image agree. Its ImageNet recipe
(lightly's ``SimCLRTransform``) relies on colour jitter and grey-scale conversion, which mean nothing on an
image that is already grey, and on small crops (scale 0.08) that on a mammogram usually miss the only lesion.
Here the geometry comes from torchvision's transforms as lightly's recipe uses them (random resized crop,
flips, rotation, Gaussian blur), the colour part is replaced by brightness / contrast / gamma changes that
mimic exposure and detector differences, and a little noise is added. lightly's ``MultiViewTransform``
makes the pair. Every knob is in :class:`~mammo_utils.config.AugmentConfig`.
"""

from __future__ import annotations

import torch
from lightly.transforms.multi_view_transform import MultiViewTransform
from torchvision.transforms import v2

from mammo_utils.config import AugmentConfig


class RandomIntensity(torch.nn.Module):
    """Random gamma, contrast and brightness for grey images in [0, 1] (the grey analogue of colour jitter)."""

    def __init__(self, brightness: float, contrast: float, gamma: tuple[float, float]) -> None:
        super().__init__()
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = torch.log(torch.tensor(self.gamma[0])), torch.log(torch.tensor(self.gamma[1]))
        g = torch.exp(lo + (hi - lo) * torch.rand(()))
        x = x.clamp(0, 1) ** g
        c = 1 + (2 * torch.rand(()) - 1) * self.contrast
        b = (2 * torch.rand(()) - 1) * self.brightness
        mean = x.mean()
        return ((x - mean) * c + mean + b).clamp(0, 1)


class GaussianNoise(torch.nn.Module):
    def __init__(self, std: float) -> None:
        super().__init__()
        self.std = std

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x + torch.randn_like(x) * self.std).clamp(0, 1) if self.std > 0 else x


def view_transform(size_px: int, cfg: AugmentConfig) -> v2.Compose:
    """One random view: a (1, H, W) float tensor in [0, 1] to a (1, size_px, size_px) tensor."""
    kernel = max(3, (size_px // 20) | 1)  # odd kernel about 5% of the image, as in SimCLR (10%), halved
    return v2.Compose([
        v2.RandomResizedCrop(size_px, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(cfg.hflip_prob),
        v2.RandomVerticalFlip(cfg.vflip_prob),
        v2.RandomRotation(cfg.rotation_deg),
        RandomIntensity(cfg.brightness, cfg.contrast, cfg.gamma),
        v2.RandomApply([v2.GaussianBlur(kernel, sigma=cfg.blur_sigma)], p=cfg.blur_prob),
        GaussianNoise(cfg.noise_std),
    ])


def simclr_views(size_px: int, cfg: AugmentConfig) -> MultiViewTransform:
    """The SimCLR pair: ``transform(x) -> [view_1, view_2]``."""
    return MultiViewTransform([view_transform(size_px, cfg), view_transform(size_px, cfg)])


def finetune_transform(size_px: int, cfg: AugmentConfig) -> v2.Compose:
    """Light augmentation for supervised fine-tuning: mild crops, flips and rotation, no intensity change."""
    return v2.Compose([
        v2.RandomResizedCrop(size_px, scale=(0.8, 1.0), ratio=cfg.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(cfg.hflip_prob),
        v2.RandomRotation(cfg.rotation_deg),
    ])
