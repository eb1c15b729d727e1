"""The random-label control: the same items with their labels permuted among women.

A protocol that scores well on labels that mean nothing measures nothing: with a model that memorises, a leaky
split carries a label from a training item to its near-copy in test whatever the label says (slice-level splits
of brain MRI reached about 96% accuracy on random labels against 50% split by subject: Yagis et al., Sci Rep
2021). Each woman keeps one label across all her items, as a real label would be shared by her films' copies, so
an honest split by woman can only score chance, and a leak scores what the protocol alone produces.
"""

from __future__ import annotations

import numpy as np
import pandas as pd


def women_labels(items: pd.DataFrame) -> pd.Series:
    """One label per woman: her worst (largest) item label, indexed by ``patient_id`` (sorted)."""
    return items.groupby(items.patient_id.astype(str))["label"].max().sort_index()


def permuted_women_labels(items: pd.DataFrame, seed: int) -> pd.Series:
    """The women's labels (:func:`women_labels`) dealt to the women in a seeded random order: as many positive
    women as before, each woman one label."""
    real = women_labels(items)
    rng = np.random.default_rng([seed, 20_250_924])
    return pd.Series(real.to_numpy()[rng.permutation(len(real))], index=real.index, name="label")


def relabel(items: pd.DataFrame, label_of_woman: pd.Series) -> pd.DataFrame:
    """``items`` with every item's ``label`` replaced by its woman's (``label_of_woman``, by ``patient_id``)."""
    return items.assign(label=items.patient_id.astype(str).map(label_of_woman).astype(int).to_numpy())


def with_labels(items: pd.DataFrame, label_set: str, seed: int) -> pd.DataFrame:
    """``items`` under a label set: ``real`` (unchanged) or ``random`` (permuted among women with ``seed``)."""
    if label_set == "real":
        return items
    return relabel(items, permuted_women_labels(items, seed))
