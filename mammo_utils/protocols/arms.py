"""The arms of the study, in one table: what each one splits, by what unit, what it may choose on test, and
the leak that makes it differ from the honest arm of its family.

Two families share nothing but the films: **whole films** (A0, A1, A2 with K copies of each copy strength, A4,
A5), labelled with the run's task (``abnormal`` by default), and **patches** (A3a, A3b), labelled lesion vs normal
tissue. Within a family every arm uses the same items, the same backbones (one per fold) and the same models; only
the split and what is chosen on test change.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from mammo_utils.protocols import splits


@dataclass(frozen=True)
class Arm:
    """One protocol.

    Attributes:
        name: e.g. ``A2 K=4``. family: ``films`` or ``patches``. unit: the column whose values stay together in
        the split (``patient_id``, ``image_id`` or ``item_id``). leak: in plain words. honest: no leak at all.
        copies: augmented copies per film (A2, A5); 0 for the films themselves or patches.
        strength: the copies' augmentation (``finetune`` or ``offline``, :mod:`.items`); "" without copies.
        select_on_test: epoch, seed and threshold chosen on the test fold (A4, A5).
    """

    name: str
    family: str
    unit: str
    leak: str
    honest: bool = False
    copies: int = 0
    strength: str = ""
    select_on_test: bool = False

    @property
    def label(self) -> str:
        """The arm's name and leak, for tables and figures."""
        return f"{self.name}: {self.leak}"


def plan_arms(copies: tuple[int, ...], strengths: tuple[str, ...] = ("finetune",)) -> list[Arm]:
    """Every arm of the study, in the order of the table (``copies``: the K values of A2; ``strengths``: the
    copies' augmentations, each with its own A2 rows and its own A5).

    A4 can never score below the all-negative floor (the share of negative items): among the thresholds it may
    choose on test is one above every score, which calls every item negative. Its accuracy is read against that
    floor, not against 0.5.
    """
    top = max(copies)
    a2 = [Arm(f"A2 K={k} {s}", "films", "item_id", f"{k} {s} cop{'y' if k == 1 else 'ies'} per film, then split by copy", copies=k,
              strength=s) for s in strengths for k in copies]
    a5 = [Arm(f"A5 {s}", "films", "item_id", f"A1 + A2 (K={top} {s}) + A4 together", copies=top, strength=s,
              select_on_test=True) for s in strengths]
    return [
        Arm("A0", "films", "patient_id", "none, split by woman (honest)", honest=True),
        Arm("A1", "films", "image_id", "split by film: a woman's other film may train"),
        *a2,
        Arm("A4", "films", "patient_id", "split by woman, epoch, seed and threshold chosen on test",
            select_on_test=True),
        *a5,
        Arm("A3a", "patches", "item_id", "overlapping patches split by patch"),
        Arm("A3b", "patches", "patient_id", "patches split by woman (honest)", honest=True),
    ]


def split_arm(arm: Arm, items: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """``items`` (films, one K's copies, or patches) with the arm's ``fold`` column for run seed ``seed``."""
    if arm.unit == "patient_id":
        return splits.a0_split(items)  # A0, A4, A3b: the manifest's folds by woman, whatever the seed
    if arm.family == "patches":
        return splits.a3a_split(items, n_folds, seed)
    if arm.copies:
        return splits.a2_split(items, n_folds, seed)  # A2 and A5
    return splits.a1_split(items, n_folds, seed)
