"""Notebook 01's checks: PASS for the reference solutions, NOT YET for the stubs, FAIL with a hint for the
mistakes a learner typically makes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from mammo_utils.course import prepare as checks
from mammo_utils.course.solutions import prepare as solutions
from mammo_utils.prepare.split import image_level_leakage


def _stub(*args):
    raise NotImplementedError


def _said(capsys) -> str:
    return capsys.readouterr().out.strip()


@pytest.mark.parametrize("name", ["breast_mask", "needs_flip", "patient_split", "leaked_women"])
def test_the_solution_passes_and_the_stub_is_not_yet(name, capsys):
    check = getattr(checks, f"check_{name}")
    assert check(getattr(solutions, f"my_{name}")) is True
    assert _said(capsys).startswith("PASS")
    assert check(_stub) is False
    assert _said(capsys).startswith("NOT YET")


def _largest_region(mask: np.ndarray) -> np.ndarray:
    regions, n = ndimage.label(mask)
    return regions == 1 + np.argmax(np.bincount(regions.ravel())[1:]) if n else mask


def test_one_threshold_and_the_largest_region_is_enough_for_the_breast_mask(capsys):
    assert checks.check_breast_mask(lambda pixels: _largest_region(pixels > 0.1))
    assert "marker left out" in _said(capsys)


@pytest.mark.parametrize("wrong, says", [
    (lambda pixels: pixels > 0.1, "keeps the bright side marker"),  # the threshold alone
    (lambda pixels: pixels > pixels.mean(), "keeps the bright side marker"),
    (lambda pixels: _largest_region(pixels > pixels.mean()), "mean or median"),  # fails once the breast fills the frame
    (lambda pixels: _largest_region(pixels > np.median(pixels)), "mean or median"),
    (lambda pixels: pixels > 0.5, "IoU"),  # mid-grey cuts away the fatty edge of the breast
    (lambda pixels: pixels < 0.1, "IoU"),  # dark = breast: the inverted mask
    (lambda pixels: np.ones_like(pixels, dtype=bool), "covers 100%"),
    (lambda pixels: (pixels > 0.1).astype(np.float32), "dtype"),
    (lambda pixels: (pixels > 0.1)[::2, ::2], "shape"),
])
def test_typical_wrong_breast_masks_fail_with_a_hint(wrong, says, capsys):
    assert checks.check_breast_mask(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL") and says in line and "Hint:" in line, line


def test_the_breast_mask_hint_gives_the_steps_only_at_the_second_wrong_try(capsys):
    assert not checks.check_breast_mask(lambda pixels: pixels > 0.1)
    first = _said(capsys)
    assert "Hint:" in first and "Steps:" not in first and "0.1" not in first.split("Hint:")[1]
    assert not checks.check_breast_mask(lambda pixels: pixels > pixels.mean())
    second = _said(capsys)
    assert "Steps:" in second and "scipy.ndimage.label" in second


@pytest.mark.parametrize("wrong", [
    lambda m: not solutions.my_needs_flip(m),  # the halves swapped
    lambda m: False,  # never flip: right breasts keep their chest wall on the right
    lambda m: bool(m[:, m.shape[1] // 2:].sum() > m[:, : m.shape[1] // 2].sum()),  # the half holding more tissue
    lambda m: 1,  # not a bool
])
def test_typical_wrong_flip_decisions_fail(wrong, capsys):
    assert checks.check_needs_flip(wrong) is False
    assert _said(capsys).startswith("FAIL")


def test_a_flip_rule_on_the_edge_columns_passes_too(capsys):
    """Any rule that gets the side right passes, not only the package's own."""
    assert checks.check_needs_flip(lambda m: bool(m[:, :3].mean() < m[:, -3:].mean()))


def _split_by_image(images: pd.DataFrame, test_fraction: float, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    split = pd.Series("train", index=images.index)
    split.iloc[rng.permutation(len(images))[: round(len(images) * test_fraction)]] = "test"
    return split


def _split_by_woman_unstratified(images: pd.DataFrame, test_fraction: float, seed: int) -> pd.Series:
    women = np.array(sorted(images["patient_id"].unique()))
    test = women[np.random.default_rng(seed).permutation(len(women))[: round(len(women) * test_fraction)]]
    return images["patient_id"].isin(test).map({True: "test", False: "train"})


@pytest.mark.parametrize("wrong, says", [
    (_split_by_image, "split by image"),
    (_split_by_woman_unstratified, "not stratified"),
    (lambda images, f, seed: solutions.my_patient_split(images, f, 0), "use the seed"),
    (lambda images, f, seed: solutions.my_patient_split(images, f, seed).groupby(images["patient_id"]).first(),
     "map it back"),
    (lambda images, f, seed: solutions.my_patient_split(images, f, seed).map({"train": 0, "test": 1}),
     "'train' or 'test'"),
])
def test_typical_wrong_patient_splits_fail_with_a_hint(wrong, says, capsys):
    assert checks.check_patient_split(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL") and says in line, line


def test_the_package_split_passes_the_learners_check(capsys):
    """The check holds the learner to what manifest.assign_splits does (train/val merged into train)."""
    from mammo_utils.prepare.split import assign_splits

    def package(images, test_fraction, seed):
        split = assign_splits(images.assign(split="", fold=""), 0.0, test_fraction, 0, seed)["split"]
        return split.where(split == "test", "train")

    assert checks.check_patient_split(package), _said(capsys)


@pytest.mark.parametrize("wrong, says", [
    # test images that have a sibling outside the test set: counts images, not women
    (lambda im, ids: int(im[im.image_id.isin(ids)].patient_id.isin(im[~im.image_id.isin(ids)].patient_id).sum()),
     "leaked women"),
    (lambda im, ids: im[im.image_id.isin(ids)].patient_id.nunique(), "leaked women"),  # every woman in test
])
def test_typical_wrong_leakage_counts_fail(wrong, says, capsys):
    assert checks.check_leaked_women(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL") and says in line


def test_the_toy_manifest_is_what_the_checks_say_it_is():
    images = checks.toy_manifest(30, ("CC", "MLO"), seed=1)
    assert len(images) == 30 * 4 and images["patient_id"].nunique() == 30
    breasts = images.groupby(["patient_id", "laterality"])[["abnormal", "malignant"]].nunique()
    assert (breasts == 1).all().all()  # both views of a breast share its label
    assert not images.index.equals(pd.RangeIndex(len(images)))
    leak = image_level_leakage(images.reset_index(drop=True), 0.25, seed=0)
    assert 0 < leak["patients_in_both"] < leak["patients"]
