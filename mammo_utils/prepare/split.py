"""The split by woman: train / validation / test, cross-validation folds, labelled subsets, and what a split by
image would leak instead.

Every split here is by patient (all of a woman's films go to one side), stratified on the patient's worst label
(:func:`patient_strata`) and seeded, so that a model is always tested on women it has never seen.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.prepare.manifest import _rows

log = logging.getLogger(__name__)


def patient_strata(images: pd.DataFrame) -> pd.Series:
    """The patient's worst label: 2 malignant, 1 abnormal (benign), 0 normal. Indexed by patient_id."""
    worst = images["malignant"].astype(int) * 2 + (images["abnormal"].astype(int) - images["malignant"].astype(int))
    return worst.groupby(images["patient_id"]).max()


def assign_splits(
    images: pd.DataFrame,
    val_fraction: float = 0.15,
    test_fraction: float = 0.25,
    n_folds: int = 5,
    seed: int = 0,
    keep_test: bool = False,
) -> pd.DataFrame:
    """Patient-level stratified split (train/val/test) and ``n_folds`` folds, deterministic per ``seed``.

    Args:
        images: the images table (``patient_id``, ``abnormal``, ``malignant`` used).
        val_fraction, test_fraction: fractions of patients per stratum.
        n_folds: folds over all patients, for cross-validation.
        seed: the random seed.
        keep_test: keep an existing official ``split == "test"`` and split only the rest into train/val.
    """
    out = images.copy()
    strata = patient_strata(out)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    split_of: dict[str, str] = {}
    official_test = set(out.loc[out["split"] == "test", "patient_id"]) if keep_test else set()
    offset = 0
    for stratum in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata == stratum].astype(str)))
        patients = patients[rng.permutation(len(patients))]
        for i, p in enumerate(patients):
            fold_of[p] = (i + offset) % max(n_folds, 1)
        offset += len(patients)  # continue the round-robin so fold sizes stay even across strata
        pool = [p for p in patients if p not in official_test]
        n = len(pool)
        n_test = 0 if keep_test else int(round(n * test_fraction))
        n_val = int(round(n * val_fraction))
        if n >= 3:  # small strata still reach every split, so each split can score both classes
            n_test = n_test if keep_test else max(n_test, 1)
            n_val = max(n_val, 1)
        for i, p in enumerate(pool):
            split_of[p] = "test" if i < n_test else "val" if i < n_test + n_val else "train"
        for p in official_test:
            split_of[p] = "test"
    pid = out["patient_id"].astype(str)
    out["split"] = pid.map(split_of)
    out["fold"] = pid.map(fold_of).astype(int) if n_folds > 0 else ""
    return out


def subsample_patients(images: pd.DataFrame, fraction: float, seed: int = 0) -> pd.DataFrame:
    """Keep ``fraction`` of the patients in each stratum (worst label), chosen with ``seed``; all their images.

    Used for label-efficiency experiments: the labelled set shrinks by patients, never by images, so that a
    woman's other views never leak into the unlabelled remainder. The subsets are **nested**: for one seed,
    each stratum's patients are put in one random order and a fraction keeps the first ``round(n x fraction)``
    of them (at least one), so the women of 10% are among those of 25%, who are among those of 50%. A curve
    over fractions then adds labels, rather than drawing a new set of women at each point.
    """
    if fraction >= 1.0:
        return images
    if fraction <= 0:
        raise DataError(f"label fraction must be in (0, 1], got {fraction}.")
    strata = patient_strata(images)
    rng = np.random.default_rng(seed)
    keep: list[str] = []
    for stratum in sorted(strata.unique()):
        patients = np.array(sorted(strata.index[strata == stratum].astype(str)))
        order = patients[rng.permutation(len(patients))]  # drawn whatever the fraction: nested subsets
        keep.extend(order[: max(1, int(round(len(patients) * fraction)))])
    return images[images["patient_id"].astype(str).isin(keep)]


def cross_validation_split(images: pd.DataFrame, k: int, n_folds: int) -> pd.DataFrame:
    """The manifest re-split for fold ``k`` of patient-level cross-validation, read from the ``fold`` column.

    Test is fold ``k``, validation fold ``(k + 1) % n_folds`` (model selection and the threshold), training the
    rest. Over the ``n_folds`` folds every patient is tested exactly once, and never by a model that saw it.

    Args:
        images: a table with ``patient_id`` and ``fold`` (0..n_folds-1, assigned by patient).
        k: the fold to test, 0 <= k < n_folds.
        n_folds: the number of folds (at least 3: train, validation and test each need one).

    Returns:
        A copy of ``images`` whose ``split`` column is this fold's train / val / test.
    """
    if n_folds < 3:
        raise DataError(f"cross-validation needs at least 3 folds (train, val, test); split.n_folds is {n_folds}.")
    fold = pd.to_numeric(images["fold"], errors="coerce")
    bad = ~fold.isin(range(n_folds))
    if bad.any():
        raise DataError(f"cross-validation needs a fold in 0..{n_folds - 1} for every image; rows "
                        f"{_rows(images, bad)} have none. Run `python -m mammo_utils prepare` again with "
                        f"split.n_folds={n_folds}.")
    out = images.copy()
    out["split"] = np.where(fold == k, "test", np.where(fold == (k + 1) % n_folds, "val", "train"))
    return out


def image_level_leakage(images: pd.DataFrame, test_fraction: float = 0.25, seed: int = 0) -> dict[str, int]:
    """What a naive split by image would do: how many women end up with images in both train and test.

    Returns ``{"patients": ..., "patients_in_both": ..., "test_images_with_a_sibling_in_train": ...}``.
    """
    rng = np.random.default_rng(seed)
    is_test = np.zeros(len(images), dtype=bool)
    is_test[rng.permutation(len(images))[: int(round(len(images) * test_fraction))]] = True
    pid = images["patient_id"].astype(str).to_numpy()
    train_patients, test_patients = set(pid[~is_test]), set(pid[is_test])
    both = train_patients & test_patients
    return {
        "patients": len(set(pid)),
        "patients_in_both": len(both),
        "test_images_with_a_sibling_in_train": int(sum(p in train_patients for p in pid[is_test])),
    }


def uses_cross_validation(cfg) -> bool:
    """Whether the run cross-validates by patient: when ``finetune.cv`` asks for it, except where the dataset
    has an official test split (CBIS-DDSM), which is then the only honest test."""
    from mammo_utils.prepare.sources import dataset_info

    official = dataset_info(cfg.dataset).official_split
    if cfg.finetune.cv and official:
        log.info("%s has an official test split: it is used instead of cross-validation", cfg.dataset)
    return cfg.finetune.cv and not official
