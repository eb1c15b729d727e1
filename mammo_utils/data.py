"""Datasets over the preprocessed cache, shared by pretraining, fine-tuning and explanation."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from .cache import load_arrays


class CachedImages(Dataset):
    """Preprocessed images held in memory as one tensor, with an optional transform and a label column.

    Items are ``(image, label)``: ``image`` a (1, S, S) float tensor in [0, 1] (or what ``transform`` makes of
    it, e.g. a list of two views), ``label`` an int (-1 when ``label_column`` is None).
    """

    def __init__(self, index: pd.DataFrame, label_column: str | None = None, transform: Callable | None = None):
        self.index = index.reset_index(drop=True)
        arrays = load_arrays(self.index) if len(self.index) else np.zeros((0, 1, 1), np.float16)
        self.images = torch.from_numpy(arrays.astype(np.float16))[:, None]  # float16 halves memory
        self.labels = (torch.as_tensor(self.index[label_column].to_numpy(), dtype=torch.long) if label_column
                       else torch.full((len(self.index),), -1, dtype=torch.long))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int):
        x = self.images[i].float()
        if self.transform is not None:
            x = self.transform(x)
        return x, int(self.labels[i])
