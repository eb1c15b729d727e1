"""The split of each arm: which items test, validate and train in each cross-validation fold, with exactly the
leak the arm is meant to have and no other.

Every arm is a k-fold cross-validation over *items* (whole films, augmented copies of films, or patches): each
item has a test ``fold``; in fold k the items of fold k test, a seeded random share of the other items' *units*
validates (choosing the epoch and the threshold), and the rest train. What changes from arm to arm is the
**unit** the folds and the validation draw are made of, and nothing else:

=====  ===========================================  ================  ============================================
arm    items                                        unit of split     leak
=====  ===========================================  ================  ============================================
A0     films                                        woman             none (the honest protocol)
A1     films                                        film              a woman's other film in training
A2     K augmented copies of each film              copy              the same film's other copies ("twins")
A3a    overlapping patches (lesion / normal)        patch             overlapping patches of the same spot
A3b    the same patches                             woman             none
A4     films, A0's split                            woman             epoch, seed and threshold chosen on test
A5     A2's copies (largest K), split by copy       copy              twins, women and choice on test together
=====  ===========================================  ================  ============================================

:func:`leak_profile` measures each leak on a split, so the tests can hold every arm to its own (and a
deliberately broken split to a failure).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mammo_utils.errors import DataError

TRAIN, VAL, TEST = "train", "val", "test"


def stratified_folds(units: pd.Series, n_folds: int, seed: int) -> pd.Series:
    """Deal units into ``n_folds`` folds, stratum by stratum, in a seeded random order.

    Args:
        units: one stratum label per unit (indexed by the unit's id), e.g. a woman's worst label.
        n_folds: the number of folds. seed: the order's seed.

    Returns:
        The fold (0..n_folds-1) of each unit, indexed like ``units``. Strata are dealt round-robin, continuing
        from one stratum to the next, so fold sizes differ by at most one and every fold gets each stratum's
        share (as :func:`mammo_utils.prepare.split.assign_splits` does for women).
    """
    rng = np.random.default_rng(seed)
    fold = pd.Series(0, index=units.index, dtype=int)
    offset = 0
    for stratum in sorted(units.unique()):
        ids = np.array(sorted(units.index[units == stratum].astype(str)))
        ids = ids[rng.permutation(len(ids))]
        fold.loc[ids] = (np.arange(len(ids)) + offset) % n_folds
        offset += len(ids)
    return fold


def _unit_strata(items: pd.DataFrame, unit: str) -> pd.Series:
    """A unit's stratum: its worst (largest) item label."""
    return items.groupby(items[unit].astype(str))["label"].max()


def folds_by(items: pd.DataFrame, unit: str, n_folds: int, seed: int) -> pd.DataFrame:
    """``items`` with a ``fold`` column dealt by ``unit`` (all items of a unit share a fold), stratified on the
    unit's worst label."""
    fold_of = stratified_folds(_unit_strata(items, unit), n_folds, seed)
    return items.assign(fold=items[unit].astype(str).map(fold_of).astype(int).to_numpy())


def a0_split(films: pd.DataFrame) -> pd.DataFrame:
    """A0, honest: the manifest's folds, dealt by woman (stratified on her worst label) when it was prepared.

    Stage 02 pretrained one backbone per fold on these folds, so a fold's backbone never saw its test women.
    """
    per_woman = films.groupby(films.patient_id.astype(str))["fold"].nunique()
    if (per_woman > 1).any() or (films["fold"].astype(int) < 0).any():
        raise DataError("The manifest's folds are not by woman (or are missing); run `prepare` again.")
    return films.assign(fold=films["fold"].astype(int))


def a1_split(films: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """A1: folds dealt by film, stratified on the film's label, ignoring that two films are one woman."""
    return folds_by(films, "image_id", n_folds, seed)


def a2_split(copies: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """A2, augment-then-split: folds dealt by augmented copy (``item_id``), as if each copy were a new image."""
    return folds_by(copies, "item_id", n_folds, seed)


def a3a_split(patches: pd.DataFrame, n_folds: int, seed: int) -> pd.DataFrame:
    """A3a: overlapping patches dealt into folds one by one (``item_id``), stratified on the patch label."""
    return folds_by(patches, "item_id", n_folds, seed)


def fold_roles(items: pd.DataFrame, k: int, unit: str, seed: int, val_share: float) -> pd.Series:
    """The role of each item in fold ``k``: ``test`` (fold k), ``val`` (a seeded, stratified ``val_share`` of the
    other units) or ``train``.

    Args:
        items: with ``fold``, ``label`` and the ``unit`` column. k: the tested fold.
        unit: the column whose values move together (the arm's unit). seed: the validation draw.
        val_share: the share of the non-test units that validate.
    """
    rest = items[items["fold"] != k]
    strata = _unit_strata(rest, unit)
    rng = np.random.default_rng([seed, k])
    val_units: list[str] = []
    for stratum in sorted(strata.unique()):
        ids = np.array(sorted(strata.index[strata == stratum].astype(str)))
        n_val = max(1, int(round(len(ids) * val_share))) if len(ids) >= 2 else 0
        val_units += list(ids[rng.permutation(len(ids))[:n_val]])
    role = np.where(items["fold"] == k, TEST, np.where(items[unit].astype(str).isin(val_units), VAL, TRAIN))
    return pd.Series(role, index=items.index, name="role")


def _boxes_overlap(a: pd.DataFrame, b: pd.DataFrame) -> np.ndarray:
    """For each patch of ``a``, whether it overlaps a patch of ``b`` of the same film (square patches)."""
    out = np.zeros(len(a), dtype=bool)
    by_film = {f: g for f, g in b.groupby(b["image_id"].astype(str))}
    for i, r in enumerate(a.itertuples()):
        g = by_film.get(str(r.image_id))
        if g is None:
            continue
        half = (g["size_px"].to_numpy() + r.size_px) / 2
        out[i] = bool(((np.abs(g["x"].to_numpy() - r.x) < half) & (np.abs(g["y"].to_numpy() - r.y) < half)).any())
    return out


def leak_profile(items: pd.DataFrame, role: pd.Series) -> dict[str, float]:
    """What a fold's split leaks from training into test, measured.

    Args:
        items: ``item_id``, ``image_id`` (the source film), ``patient_id``; patches also ``x, y, size_px``.
        role: ``train`` / ``val`` / ``test`` per item.

    Returns:
        ``women_in_train_and_test`` (count), ``test_share_woman_in_train`` (test items whose woman has an item in
        training), ``test_share_film_in_train`` (test items whose own film has another item in training: a twin
        copy or another patch of the film), ``test_share_overlapping_train`` (test patches that overlap a training
        patch; 0 for whole films), ``n_test``, ``n_train``.
    """
    train, test = items[role == TRAIN], items[role == TEST]
    train_women, train_films = set(train.patient_id.astype(str)), set(train.image_id.astype(str))
    n = max(len(test), 1)
    overlap = 0.0
    if "x" in items and len(test):
        overlap = float(_boxes_overlap(test, train).mean())
    return {
        "women_in_train_and_test": len(train_women & set(test.patient_id.astype(str))),
        "test_share_woman_in_train": float(test.patient_id.astype(str).isin(train_women).sum() / n),
        "test_share_film_in_train": float(test.image_id.astype(str).isin(train_films).sum() / n),
        "test_share_overlapping_train": overlap,
        "n_test": int(len(test)),
        "n_train": int(len(train)),
    }


def expected_twin_share(k_copies: int, n_folds: int, val_share: float) -> float:
    """The share of test copies with a twin in training that A2's construction implies: each of a film's other
    ``k_copies - 1`` copies lands outside the test fold with probability about (n-1)/n, and then trains unless
    drawn for validation (``val_share``); a test copy has no twin in training only if none of them trains."""
    p_train = (n_folds - 1) / n_folds * (1 - val_share)
    return float(1 - (1 - p_train) ** (k_copies - 1))
