"""Frozen-backbone features of every item, computed once per (backbone, item set) and kept on disk.

The study fits hundreds of logistic regressions (arms x inits x seeds x folds x configurations) on the same few
thousand items; the ResNet-50 forward pass is the only expensive step, so each backbone sees each item once.
A cached file is named after the backbone's identity (a hash of its checkpoint's bytes, or the architecture,
``random-s<seed>`` and the torch version for a random initialisation) and the item set, and holds the item ids it
was computed for: a changed backbone or item set computes anew, an unchanged one is read back.

Raw pixels are a feature set too (:func:`pixel_features`): the items shrunk to ``pixels_px``, what 1-NN and the
memorising CNN read.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F

from mammo_utils.finetune.linear import extract_features
from mammo_utils.models import load_backbone, make_backbone
from mammo_utils.protocols.items import load_pixels
from mammo_utils.runs.devices import Placement
from mammo_utils.runs.files import atomic_write_bytes
from mammo_utils.runs.trainer import seed_everything


@dataclass(frozen=True)
class BackboneRef:
    """A backbone the study can load when it needs one: ``tag`` names it in the cache, ``load`` builds it."""

    tag: str
    load: Callable[[], torch.nn.Module]


def file_digest(path: Path, chunk: int = 1 << 20) -> str:
    """First 10 hex digits of the SHA-256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()[:10]


def checkpoint_backbone(name: str, path: Path, hint: str = "") -> BackboneRef:
    """A pretrained backbone saved by :func:`mammo_utils.models.save_backbone`, tagged by its bytes."""
    path = Path(path)
    return BackboneRef(f"{name}-{file_digest(path)}", lambda: load_backbone(path, hint=hint))


def random_backbone(seed: int, arch: str = "resnet18") -> BackboneRef:
    """A randomly initialised one-channel ResNet (``arch``), drawn from ``seed`` (the same weights for the same
    seed and torch)."""

    def load() -> torch.nn.Module:
        seed_everything(seed)
        return make_backbone(arch, "random")

    return BackboneRef(f"random-{arch}-s{seed}-torch{torch.__version__.split('+')[0]}", load)


def pixel_features(items: pd.DataFrame, size_px: int, chunk: int = 512) -> np.ndarray:
    """(N, size_px, size_px) float32 pixels of ``items``, each array shrunk (antialiased) to ``size_px``."""
    parts = []
    for start in range(0, len(items), chunk):
        x = load_pixels(items.iloc[start : start + chunk])
        if x.shape[-1] != size_px:
            x = F.interpolate(x, size=(size_px, size_px), mode="bilinear", antialias=True)
        parts.append(x[:, 0].numpy())
    return np.concatenate(parts) if parts else np.zeros((0, size_px, size_px), np.float32)


class FeatureStore:
    """Features of item sets under backbones, cached in ``folder/<backbone tag>/<item set>.npz``.

    Args:
        folder: the cache folder. where: device and precision of the forward passes.
        batch_size: images per forward pass. chunk: items loaded into memory at a time.
    """

    def __init__(self, folder: Path, where: Placement, batch_size: int = 64, chunk: int = 512) -> None:
        self.folder, self.where, self.batch_size, self.chunk = Path(folder), where, batch_size, chunk
        self._loaded: tuple[str, torch.nn.Module] | None = None
        self.computed = 0  # forward passes run (not read back), for the stage's log

    def path(self, ref: BackboneRef, items_tag: str) -> Path:
        return self.folder / ref.tag / f"{items_tag}.npz"

    def _backbone(self, ref: BackboneRef) -> torch.nn.Module:
        if self._loaded is None or self._loaded[0] != ref.tag:
            self._loaded = (ref.tag, ref.load())
        return self._loaded[1]

    def features(self, ref: BackboneRef, items: pd.DataFrame, items_tag: str) -> np.ndarray:
        """(N, D) float32 features of ``items`` (in their order) under the backbone ``ref``."""
        path = self.path(ref, items_tag)
        ids = items.item_id.astype(str).to_numpy()
        if path.exists():
            with np.load(path, allow_pickle=False) as z:
                cached = dict(zip(z["ids"].astype(str), z["features"], strict=True))
            if all(i in cached for i in ids):
                return np.stack([cached[i] for i in ids]).astype(np.float32) if len(ids) else np.zeros((0, 1))
        backbone = self._backbone(ref)
        parts = []
        for start in range(0, len(items), self.chunk):
            pixels = load_pixels(items.iloc[start : start + self.chunk])
            parts.append(extract_features(backbone, pixels, self.where, self.batch_size).numpy())
        feats = np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)
        self.computed += len(items)
        buf = io.BytesIO()
        np.savez(buf, ids=ids.astype(str), features=feats.astype(np.float32))
        atomic_write_bytes(path, buf.getvalue())
        return feats.astype(np.float32)
