"""The unlabelled data of stage 02: random square regions of the breast, new ones every epoch.

Each item is one region of ``region_px`` (the crop side times ``views.region_scale``: both views are cut from it,
so they overlap and show the same tissue), centred on a breast pixel of one of the pretraining films at
``crops.film_size_px``: a film drawn uniformly, then a point of its breast drawn uniformly. An epoch is a fixed
number of regions, not a pass over a finite set: there are as many regions as breast pixels.

:class:`~mammo_utils.prepare.loaders.EpochShuffle` hands every item a seed that depends on (seed, epoch, index), so
the regions of an epoch are the same with any number of loader workers and after a resume.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from mammo_utils.prepare.crops import cut


class BreastRegions(Dataset):
    """Random regions of the breast of ``films`` (2-D arrays, zero outside the breast).

    Args:
        films: image_id -> the pretraining film at ``crops.film_size_px`` (float16 is fine).
        region_px: side of a region.
        n_per_epoch: regions per epoch (steps per epoch x batch size).
    """

    def __init__(self, films: dict[str, np.ndarray], region_px: int, n_per_epoch: int) -> None:
        if not films:
            raise ValueError("no film to pretrain on")
        self.image_ids, self.films = list(films), list(films.values())
        self.boxes = [_breast_box(f) for f in self.films]
        self.region_px, self.n = int(region_px), int(n_per_epoch)

    def __len__(self) -> int:
        return self.n

    def point(self, k: int, rng: np.random.Generator) -> tuple[float, float]:
        """A uniformly drawn breast pixel ``(x, y)`` of film ``k`` (by rejection inside the breast's box)."""
        film, (y0, y1, x0, x1) = self.films[k], self.boxes[k]
        for _ in range(64):
            y, x = int(rng.integers(y0, y1)), int(rng.integers(x0, x1))
            if film[y, x] > 0:
                return float(x), float(y)
        return (x0 + x1) / 2, (y0 + y1) / 2

    def __getitem__(self, key: int | tuple[int, int]):
        i, seed = key if isinstance(key, tuple) else (key, key)
        rng = np.random.default_rng(seed)
        k = int(rng.integers(len(self.films)))
        x, y = self.point(k, rng)
        region = cut(self.films[k], x, y, self.region_px)
        return torch.from_numpy(np.asarray(region, dtype=np.float32))[None], -1


def _breast_box(film: np.ndarray) -> tuple[int, int, int, int]:
    """Rows and columns ``(y0, y1, x0, x1)`` bounding the breast (the whole film when there is none)."""
    rows, cols = np.flatnonzero((film > 0).any(axis=1)), np.flatnonzero((film > 0).any(axis=0))
    if not len(rows):
        return 0, film.shape[0], 0, film.shape[1]
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
