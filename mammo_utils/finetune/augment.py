"""The light augmentation of supervised fine-tuning, for whole films and for crops alike: a mild crop (the lesion
stays in view), a horizontal flip (left and right breasts are mirror images), a small rotation (positioning varies
between exams). No intensity change: the grey levels are what a radiologist reads. Settings:
:class:`~mammo_utils.sections.AugmentConfig`."""

from __future__ import annotations

from torchvision.transforms import v2

from mammo_utils.sections import AugmentConfig


def finetune_transform(size_px: int, cfg: AugmentConfig) -> v2.Compose:
    """Light augmentation for supervised fine-tuning: mild crops, flips and rotation, no intensity change."""
    return v2.Compose([
        v2.RandomResizedCrop(size_px, scale=cfg.crop_scale, ratio=cfg.crop_ratio, antialias=True),
        v2.RandomHorizontalFlip(cfg.hflip_prob),
        v2.RandomRotation(cfg.rotation_deg),
    ])
