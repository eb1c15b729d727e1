"""What the study reads, built once per run and shared by every arm: the films and their augmented copies of each
strength, the patches and their controls, the per-fold backbones, and every feature set (raw pixels, single
statistics, each backbone's features, kept on disk)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.config import Config
from mammo_utils.prepare.manifest import load_manifest
from mammo_utils.prepare.stage import load_hires, load_index
from mammo_utils.protocols.arms import Arm, plan_arms
from mammo_utils.protocols.backbones import fold_backbones
from mammo_utils.protocols.features import BackboneRef, FeatureStore, pixel_features, random_backbone
from mammo_utils.protocols.items import OfflineAugment, augmented_copies, films_table, with_copies
from mammo_utils.protocols.patches import (
    STATISTICS,
    PatchPlan,
    control_aucs,
    make_patches,
    plan_key,
    statistics,
    study_sites,
)
from mammo_utils.runs.devices import placement
from mammo_utils.runs.paths import require

RANDOM = "random"
PIXELS = "pixels"


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


def offline_augment(cfg: Config) -> OfflineAugment:
    """The offline copies' settings from ``protocols``."""
    p = cfg.protocols
    return OfflineAugment(p.offline_flip_prob, p.offline_shift, p.offline_noise_sd)


class Study:
    """The items, backbones and features of one run's study (built once, used by every arm)."""

    def __init__(self, cfg: Config, out: Path) -> None:
        self.cfg, self.out, p = cfg, out, cfg.protocols
        self.n_folds = cfg.split.n_folds
        self.val_share = 1 / (self.n_folds - 1)  # one fold's worth of the other folds' units validates
        self.seeds = [cfg.seed + s for s in range(p.seeds)]
        self.ssl = cfg.pretrain.method
        self.arms = plan_arms(p.copies, p.copy_strengths)
        index = load_index(cfg)
        _, lesions = load_manifest(require(cfg, "prepare", "images.csv").parent)
        self.index, self.films = index, films_table(index, cfg.task)
        items = out / "items"
        key = _digest([cfg.image_size_px, asdict(cfg.augment), asdict(offline_augment(cfg)), cfg.seed,
                       sorted(self.films.array_path)])
        self.copies = pd.concat([augmented_copies(self.films, max(p.copies), items / f"copies-{s}-{key}",
                                                  cfg.image_size_px, cfg.augment, cfg.seed, s, offline_augment(cfg))
                                 for s in p.copy_strengths], ignore_index=True)
        self.plan = PatchPlan(cfg.crops.size_px, p.patches_per_site, p.normal_sites_per_film, p.patch_match_sd)
        sites = study_sites(index, lesions, cfg.crops.film_size_px)
        hires = load_hires(index)
        pkey = plan_key(self.plan, index, sites, cfg.seed)
        self.patches = make_patches(index, sites, hires, items / f"patches-{pkey}", self.plan, cfg.seed)
        patch_pixels = np.stack([np.load(a, allow_pickle=False).astype(np.float32) for a in self.patches.array_path])
        self.controls = control_aucs(index, sites, hires, self.plan, cfg.seed, patch_pixels,
                                     self.patches.label.to_numpy())
        self.family_items = {"films": pd.concat([self.films, self.copies.drop(columns=["copy", "strength"])],
                                                ignore_index=True), "patches": self.patches}
        self.position = {f: pd.Index(t.item_id.astype(str)) for f, t in self.family_items.items()}
        self.pixels = {f: pixel_features(t, p.pixels_px) for f, t in self.family_items.items()}
        self._statistics = statistics(patch_pixels)
        self.store = FeatureStore(out / "features", placement(cfg), batch_size=2 * cfg.finetune.batch_size)
        self.fold_refs = fold_backbones(cfg, self.films)
        self.random_ref = random_backbone(cfg.seed, cfg.backbone)
        self._matrices: dict[tuple[str, str], np.ndarray] = {}

    def items_of(self, arm: Arm) -> pd.DataFrame:
        """The items an arm splits: the films, the first K copies of each of one strength, or the patches."""
        if arm.family == "patches":
            return self.patches
        if not arm.copies:
            return self.films
        return with_copies(self.copies, arm.copies, arm.strength).drop(columns=["copy", "strength"])

    def feature_sets(self, family: str, model: str) -> list[str]:
        """The feature sets a model reads in a family: the backbones' features (the self-supervised one only where
        stage 02 has it for every fold), raw pixels for 1-NN, and the single statistics for the patches."""
        backbones = ([self.ssl] if all(r is not None for r in self.fold_refs) else []) + [RANDOM]
        if model == "nearest":
            return [PIXELS, *backbones]
        return backbones + (list(STATISTICS) if family == "patches" else [])

    def features(self, family: str, name: str, fold: int) -> np.ndarray:
        """(N, D) features of every item of the family (in :attr:`position` order) under feature set ``name``, as
        fold ``fold`` sees them (its own backbone for the self-supervised features)."""
        if name == PIXELS:
            return self.pixels[family].reshape(len(self.pixels[family]), -1)
        if name in STATISTICS:
            return self._statistics[name][:, None]
        ref = self.random_ref if name == RANDOM else self.fold_refs[fold]
        return self.matrix(family, ref)

    def matrix(self, family: str, ref: BackboneRef) -> np.ndarray:
        """Features of every item of the family under ``ref`` (cached on disk; the last few kept in memory)."""
        if (family, ref.tag) not in self._matrices:
            if len(self._matrices) >= 2 * (self.n_folds + 1):
                self._matrices.pop(next(iter(self._matrices)))
            if family == "films":
                tags = [("films", self.films)] + [(f"copies-{s}{len(c) // max(len(self.films), 1)}", c)
                                                  for s, c in self.copies.groupby("strength", sort=False)]
                x = np.concatenate([self.store.features(ref, t, tag) for tag, t in tags])
            else:
                x = self.store.features(ref, self.patches, f"patches-{self.plan.size_px}")
            self._matrices[(family, ref.tag)] = x
        return self._matrices[(family, ref.tag)]
