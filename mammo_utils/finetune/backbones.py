"""Where a fine-tuning run starts from: stage 02's pretrained backbone (the fold's own in cross-validation),
ImageNet's, or random weights; each built once per (initialisation, fold, seed) of the stage."""

from __future__ import annotations

import pandas as pd
import torch

from mammo_utils.config import Config
from mammo_utils.finetune.linear import feature_table
from mammo_utils.models import load_backbone, make_backbone
from mammo_utils.pretrain.methods import METHODS
from mammo_utils.runs.paths import how_to_run, require
from mammo_utils.runs.trainer import seed_everything


def initial_backbone(cfg: Config, init: str, cv_fold: int | None = None) -> torch.nn.Module:
    """The backbone a run starts from: stage 02's for a self-supervised init (the fold's own in
    cross-validation), else ``random`` (seed it first) or ``imagenet``."""
    if init in METHODS:
        name = "backbone.pt" if cv_fold is None else f"cv{cv_fold}/backbone.pt"
        return load_backbone(require(cfg, "pretrain", name), hint=how_to_run(cfg, "pretrain"))
    return make_backbone(cfg.backbone, init)


class BackboneCache:
    """Initial backbones and their frozen features, each computed once per (init, fold, seed), the last few kept.

    A random backbone is a function of the seed it is drawn with; a pretrained one is the same for every seed.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._backbones: dict[tuple, torch.nn.Module] = {}
        self._features: dict[tuple, dict] = {}

    @staticmethod
    def key(init: str, cv_fold: int | None, seed: int) -> tuple:
        return init, cv_fold, seed if init == "random" else None

    def backbone(self, init: str, cv_fold: int | None, seed: int) -> torch.nn.Module:
        key = self.key(init, cv_fold, seed)
        if key not in self._backbones:
            seed_everything(seed)
            self._backbones = {k: v for k, v in self._backbones.items() if k[:2] == key[:2]}  # keep memory low
            self._backbones[key] = initial_backbone(self.cfg, init, cv_fold)
        return self._backbones[key]

    def film_features(self, init: str, cv_fold: int | None, seed: int, index: pd.DataFrame) -> dict:
        """Frozen features of every film of ``index``, by image_id."""
        key = self.key(init, cv_fold, seed)
        if key not in self._features:
            self._features = {k: v for k, v in self._features.items() if k[:2] == key[:2]}
            self._features[key] = feature_table(self.cfg, self.backbone(init, cv_fold, seed), index)
        return self._features[key]
