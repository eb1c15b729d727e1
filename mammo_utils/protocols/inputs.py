"""What the study reads, built once per run and shared by every arm: the films and their augmented copies, the
native-resolution patches and their controls, the per-fold backbones and the on-disk feature store."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.config import Config
from mammo_utils.prepare.manifest import load_manifest
from mammo_utils.prepare.sources import get_dataset
from mammo_utils.prepare.stage import load_index
from mammo_utils.protocols.arms import Arm, plan_arms
from mammo_utils.protocols.backbones import fold_backbones
from mammo_utils.protocols.features import BackboneRef, FeatureStore, random_backbone
from mammo_utils.protocols.items import augmented_copies, films_table, with_copies
from mammo_utils.protocols.patches import PatchPlan, centre_contrast_auc, make_patches, plan_key
from mammo_utils.runs.devices import placement
from mammo_utils.runs.paths import require


def _digest(obj: object) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:10]


class Study:
    """The items, backbones and features of one run's study (built once, used by every arm)."""

    def __init__(self, cfg: Config, out: Path) -> None:
        self.cfg, self.out, p = cfg, out, cfg.protocols
        self.n_folds = cfg.split.n_folds
        self.val_share = 1 / (self.n_folds - 1)  # one fold's worth of the other folds' units validates
        self.seeds = [cfg.seed + s for s in range(p.seeds)]
        self.ssl = cfg.pretrain.method
        self.arms = plan_arms(p.copies)
        index = load_index(cfg)
        images, lesions = load_manifest(require(cfg, "prepare", "images.csv").parent)
        images = images[images.image_id.astype(str).isin(set(index.image_id.astype(str)))]
        self.index, self.films = index, films_table(index, cfg.task)
        items = out / "items"
        copies_key = _digest([cfg.image_size_px, asdict(cfg.augment), cfg.seed, sorted(self.films.array_path)])
        self.copies = augmented_copies(self.films, max(p.copies), items / f"copies-{copies_key}", cfg.image_size_px,
                                       cfg.augment, cfg.seed)
        self.copies_key = copies_key
        self.plan = PatchPlan(p.patch_size_px, p.patches_per_site, normal_sites_per_film=p.normal_sites_per_film)
        root = get_dataset(cfg.dataset).locate(cfg)
        key = plan_key(self.plan, images, lesions, cfg.seed)
        self.patches = make_patches(images, lesions, root, items / f"patches-{key}", self.plan, cfg.seed)
        self.controls = centre_contrast_auc(images, lesions, root, self.plan, cfg.seed, self.patches)
        self.family_items = {"films": pd.concat([self.films, self.copies.drop(columns="copy")], ignore_index=True),
                             "patches": self.patches}
        self.position = {f: pd.Index(t.item_id.astype(str)) for f, t in self.family_items.items()}
        self.store = FeatureStore(out / "features", placement(cfg), batch_size=2 * cfg.finetune.batch_size)
        pre_key = _digest([cfg.section_hash("dataset", "seed", "split", "augment", "pretrain", "precision"), key,
                           p.patch_size_px, p.patch_pretrain_epochs])
        self.fold_refs = {"films": fold_backbones(cfg, self.films, "films", out, pre_key),
                          "patches": fold_backbones(cfg, self.patches, "patches", out, pre_key)}
        self._matrices: dict[tuple[str, str], np.ndarray] = {}

    def items_of(self, arm: Arm) -> pd.DataFrame:
        """The items an arm splits: the films, the first K copies of each, or the patches."""
        if arm.family == "patches":
            return self.patches
        return with_copies(self.copies, arm.copies).drop(columns="copy") if arm.copies else self.films

    def refs(self, family: str, init: str, seed: int) -> list[BackboneRef | None]:
        """The backbone of each fold: the family's per-fold self-supervised ones, or the seed's random one."""
        return self.fold_refs[family] if init == self.ssl else [random_backbone(seed)] * self.n_folds

    def matrix(self, family: str, ref: BackboneRef) -> np.ndarray:
        """Features of every item of the family under ``ref`` (cached on disk; the last few kept in memory)."""
        if (family, ref.tag) not in self._matrices:
            if len(self._matrices) >= self.n_folds + 1:
                self._matrices.pop(next(iter(self._matrices)))
            if family == "films":
                tag = f"copies{len(self.copies) // max(len(self.films), 1)}"
                x = np.concatenate([self.store.features(ref, self.films, "films"),
                                    self.store.features(ref, self.copies, tag)])
            else:
                x = self.store.features(ref, self.patches, f"patches-{self.plan.size_px}")
            self._matrices[(family, ref.tag)] = x
        return self._matrices[(family, ref.tag)]
