"""Datasets over the preprocessed cache, shared by pretraining, fine-tuning and explanation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from mammo_utils.prepare.cache import load_arrays


class CachedImages(Dataset):
    """Preprocessed images held in memory as one tensor, with an optional transform and a label column.

    Items are ``(image, label)``: ``image`` a (1, S, S) float tensor in [0, 1] (or what ``transform`` makes of
    it, e.g. a list of two views), ``label`` an int (-1 when ``label_column`` is None).
    """

    def __init__(self, index: pd.DataFrame, label_column: str | None = None, transform: Callable | None = None):
        self.index = index.reset_index(drop=True)
        arrays = load_arrays(self.index) if len(self.index) else np.zeros((0, 1, 1), np.float16)
        self.images = torch.from_numpy(arrays.astype(np.float16))[:, None]  # float16 halves memory
        self.labels = (torch.tensor(self.index[label_column].to_numpy(), dtype=torch.long) if label_column
                       else torch.full((len(self.index),), -1, dtype=torch.long))
        self.transform = transform

    @classmethod
    def from_arrays(cls, images: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                    transform: Callable | None = None) -> CachedImages:
        """The same dataset over images already in memory ((N, S, S) or (N, 1, S, S); e.g. stage 01's crops)."""
        ds = cls.__new__(cls)
        images = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
        ds.images = (images if images.dim() == 4 else images[:, None]).to(torch.float16)
        ds.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        ds.index = pd.DataFrame(index=range(len(ds.labels)))
        ds.transform = transform
        return ds

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, key: int | tuple[int, int]):
        i, seed = key if isinstance(key, tuple) else (key, None)
        x = self.images[i].float()
        if self.transform is not None:
            if seed is None:
                x = self.transform(x)
            else:  # the same (image, epoch) always gets the same views, whatever the worker or process
                with torch.random.fork_rng(devices=[]):  # the CPU generator only, where the transforms draw
                    torch.default_generator.manual_seed(seed)  # (torch.manual_seed would seed the GPUs too, slowly)
                    x = self.transform(x)
        return x, int(self.labels[i])


class EpochShuffle(Sampler):
    """Shuffles by ``(seed, epoch)`` and hands each index its own augmentation seed.

    Yields ``(index, seed)`` pairs that :class:`CachedImages` understands. The order and the random views of an
    epoch are a pure function of the seed and the epoch number, so a run that is killed mid-epoch and resumed
    from the last epoch's checkpoint replays that epoch exactly, with any number of loader workers. Lightning
    calls :meth:`set_epoch` at the start of each epoch (and wraps the sampler for DDP).
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        order = torch.randperm(self.n, generator=g).tolist()
        seeds = torch.randint(0, 2**62, (self.n,), generator=g).tolist()
        return iter(zip(order, seeds, strict=True))
