"""Checks of notebook 01's exercises (data preparation): breast mask, orientation, patient split, leakage.

Each check runs the learner's function on inputs it makes itself (synthetic films from
:mod:`mammo_utils.prepare.synthetic`, small manifests of made-up women) and compares the answer with the
package's own implementation (:mod:`mammo_utils.prepare.preprocess`, :mod:`mammo_utils.prepare.manifest`) or with the truth the
inputs were made with.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from mammo_utils.course import check
from mammo_utils.prepare.preprocess import breast_mask, plan_transform
from mammo_utils.prepare.split import image_level_leakage, patient_strata
from mammo_utils.prepare.synthetic import generate_image

STRATUM_NAMES = {0: "normal", 1: "benign", 2: "malignant"}


def synthetic_films(n: int = 8, seed: int = 0):
    """``n`` synthetic films (:class:`~mammo_utils.prepare.synthetic.SyntheticImage`) covering both sides, both
    views, the four densities, every lesion type and two sizes."""
    lesion_types = (None, "circumscribed", "spiculated", "calcification")
    return [generate_image(np.random.default_rng([seed, k]), (128, 192)[k % 2], ("CC", "MLO")[k % 2],
                           ("L", "R")[(k // 2) % 2], "ABCD"[k % 4], lesion_types[(k // 3) % 4]) for k in range(n)]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def _marker(film) -> np.ndarray:
    """Where :func:`~mammo_utils.prepare.synthetic.generate_image` put the film's lead side marker."""
    size = film.pixels.shape[0]
    m = max(3, size // 24)
    box = np.zeros_like(film.pixels, dtype=bool)
    box[size - 3 * m : size - m, size - 3 * m : size - 2 * m] = True
    return box[:, ::-1] if film.laterality == "R" else box


@check("1.1 Breast mask", hint="The breast is the one large bright region of the film: the background is near 0 "
       "(the histogram above), and the side marker is bright too but a small island apart from the breast. The "
       "mask must follow the skin line and leave the marker out.",
       recipe="Threshold once between the histogram's two groups (bright = dense, so the breast is ABOVE it, "
       "e.g. pixels > 0.1), label the connected regions with scipy.ndimage.label, keep the largest one (the "
       "largest count of np.bincount of the labels, label 0 excepted), fill its holes with "
       "scipy.ndimage.binary_fill_holes, and return it as a bool array of the film's shape.")
def check_breast_mask(fn: Callable[[np.ndarray], np.ndarray], min_iou: float = 0.9) -> str:
    """IoU of ``fn(pixels)`` with :func:`mammo_utils.prepare.preprocess.breast_mask` on eight synthetic films and
    on three of them cropped to the breast (which then fills the frame, as on a small detector); the side
    marker must be left out."""
    cases = []
    for k, film in enumerate(synthetic_films()):
        cases.append((f"film {k} ({film.view}, {film.laterality}, density {film.density})", film.pixels, _marker(film)))
    for k, film in list(enumerate(synthetic_films()))[1::3]:
        rows, cols = np.nonzero(breast_mask(film.pixels))
        crop = film.pixels[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        cases.append((f"film {k} cropped to its breast (which fills the frame)", crop, None))
    ious = []
    for what, pixels, marker in cases:
        got = fn(pixels.copy())
        if got is None:
            raise NotImplementedError
        got = np.asarray(got)
        assert got.shape == pixels.shape, f"on {what} your mask has shape {got.shape}, the film {pixels.shape}"
        assert got.dtype == bool, f"your mask's dtype is {got.dtype}; return booleans (True on the breast)"
        expected = breast_mask(pixels)
        ious.append(_iou(got, expected))
        if ious[-1] < min_iou:
            said = (f"on {what} your mask overlaps the package's with IoU {ious[-1]:.2f} (needs {min_iou}); it "
                    f"covers {got.mean():.0%} of the film, the breast {expected.mean():.0%}")
            if max(_iou(got, pixels > t) for t in (pixels.mean(), np.median(pixels))) > 0.95:
                said += (": a threshold taken from the film's own mean or median moves with how much of the frame "
                         "the breast fills; the background's grey level does not")
            raise AssertionError(said)
        if marker is not None:
            assert got[marker].mean() < 0.5, (
                f"on {what} your mask keeps the bright side marker in the corner (IoU {ious[-1]:.2f}): the mask is "
                "the breast and nothing else, and a marker is a shortcut a network would learn to read")
    return (f"IoU with preprocess.breast_mask {min(ious):.3f}-{max(ious):.3f} on {len(ious)} synthetic films, three "
            "of them cropped to the breast; the side marker left out.")


def _hand_drawn_masks() -> list[tuple[np.ndarray, bool]]:
    """Half-discs whose flat side (the chest wall) touches the left or the right edge; True = needs a flip."""
    out = []
    for h, w in ((60, 40), (90, 50), (50, 50)):
        yy, xx = np.mgrid[:h, :w]
        left = (xx / w) ** 2 + ((yy - h / 2) / (h / 2)) ** 2 <= 1
        out += [(left, False), (left[:, ::-1].copy(), True)]
    # A tall, MLO-like breast: a narrow strip along the chest wall (right) above a bulge that reaches away from it.
    # Its left half holds more breast than its right: "the half with more tissue" gets it wrong.
    tall = np.zeros((200, 100), dtype=bool)
    tall[:120, 85:] = True
    tall[120:, :61] = True
    out += [(tall, True), (tall[:, ::-1].copy(), False)]
    return out


@check("1.2 Chest wall on the left", hint="The film cuts the breast at the chest wall, so the breast touches that "
       "edge of its box along many rows, while the nipple side touches its edge at one point. (Counting the "
       "tissue in each half fails on tall MLO views.)",
       recipe="Compare how much of the outermost few columns on each side the mask covers (crop_mask[:, :k].mean() "
       "against crop_mask[:, -k:].mean() for a small k); return True (flip) when the right side is covered more, "
       "as a bool.")
def check_needs_flip(fn: Callable[[np.ndarray], bool]) -> str:
    """``fn(crop_mask)`` against the truth and :func:`mammo_utils.prepare.preprocess.plan_transform` on synthetic films
    (left films never need a flip, right ones always do) and on hand-drawn shapes."""
    cases = []
    for film in synthetic_films():
        mask = breast_mask(film.pixels)
        t = plan_transform(film.pixels, mask, 64)
        truth = film.laterality == "R"  # synthetic right breasts are displayed mirrored: chest wall on the right
        assert t.flipped == truth, "the package's plan_transform disagrees with the film's side; please report it"
        cases.append((f"a synthetic {film.view} film of a {'right' if truth else 'left'} breast",
                       mask[t.crop_y0:t.crop_y1, t.crop_x0:t.crop_x1], truth))
    cases += [(f"a half-disc against the {'right' if flip else 'left'} edge", m, flip)
              for m, flip in _hand_drawn_masks()]
    for name, crop_mask, expected in cases:
        got = fn(crop_mask.copy())
        if got is None:
            raise NotImplementedError
        assert isinstance(got, bool | np.bool_), f"return True or False, not {type(got).__name__}"
        assert bool(got) == expected, (
            f"for {name} (chest wall on the {'right' if expected else 'left'}) you said flip={bool(got)}; "
            f"it should be {expected}")
    return f"agrees with plan_transform and with the film's side on {len(cases)} breasts."


def toy_manifest(n_patients: int = 60, views: tuple[str, ...] = ("CC", "MLO"), seed: int = 0) -> pd.DataFrame:
    """A made-up images table: each woman has both breasts in every view, each breast normal, benign or
    malignant; both views of a breast share its label. Rows come shuffled, with a non-default index."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        for side in ("L", "R"):
            label = rng.choice(3, p=[0.6, 0.25, 0.15])
            rows += [dict(image_id=f"P{p:03d}_{side}_{view}", patient_id=f"P{p:03d}", laterality=side, view=view,
                          abnormal=int(label > 0), malignant=int(label == 2)) for view in views]
    images = pd.DataFrame(rows).sample(frac=1.0, random_state=seed)
    return images.set_index(pd.Index(np.arange(len(images)) * 3 + 100))


def _as_split(got, images: pd.DataFrame) -> pd.Series:
    if got is None:
        raise NotImplementedError
    if isinstance(got, pd.DataFrame):
        assert "split" in got.columns, "you returned a table; return the split column (a Series), one value per image"
        got = got["split"]
    if isinstance(got, pd.Series):
        assert len(got) == len(images) and set(got.index) == set(images.index), (
            f"return one value per row of images, indexed like images ({len(images)} rows); yours has {len(got)} "
            "values. If you built a split per woman, map it back: images['patient_id'].map(split_of_woman)")
        return got.reindex(images.index).astype(str)
    got = np.asarray(got)
    assert got.shape == (len(images),), f"return one split per image ({len(images)}), not shape {got.shape}"
    return pd.Series(got, index=images.index).astype(str)


@check("1.3 Patient-level split", hint="Split the list of WOMEN, not the list of images, and keep every worst label "
       "(normal, benign, malignant) in test in its share; the seed decides who goes where.",
       recipe="Take each woman's worst label (split.patient_strata); within each stratum sort her IDs, shuffle "
       "them with np.random.default_rng(seed) and send the first round(n * test_fraction) women to test; then "
       "give each image its woman's split with images['patient_id'].map(...), as 'train' or 'test'.")
def check_patient_split(fn: Callable[[pd.DataFrame, float, int], pd.Series]) -> str:
    """No woman on both sides; within each stratum the share of women in test within one woman of the target;
    the same split for the same seed; a different split for other seeds."""
    checked = 0
    for views, n_patients, fraction in ((("CC", "MLO"), 60, 0.25), (("MLO",), 80, 0.3), (("CC", "MLO"), 45, 0.2)):
        images = toy_manifest(n_patients, views, seed=n_patients)
        split = _as_split(fn(images.copy(), fraction, 0), images)
        bad = set(split) - {"train", "test"}
        assert not bad, f"split values must be 'train' or 'test'; you returned {sorted(bad)}"
        per_woman = split.groupby(images["patient_id"]).nunique()
        leaking = per_woman[per_woman > 1].index.tolist()
        assert not leaking, (
            f"{len(leaking)} of {len(per_woman)} women have images in both train and test (e.g. {leaking[0]}): "
            "that is a split by image")
        in_test = split.eq("test").groupby(images["patient_id"]).first()
        strata = patient_strata(images)
        for stratum, women in strata.groupby(strata):
            n, n_test = len(women), int(in_test[women.index].sum())
            assert abs(n_test - fraction * n) <= 1, (
                f"among the {n} {STRATUM_NAMES[stratum]} women, {n_test} are in test; about {fraction * n:.1f} "
                f"({fraction:.0%}) should be: the split is not stratified on the worst label")
        again = _as_split(fn(images.copy(), fraction, 0), images)
        assert again.equals(split), "two calls with the same seed gave different splits; use the seed you are given"
        others = [_as_split(fn(images.copy(), fraction, s), images) for s in (1, 2, 3)]
        assert any(not o.equals(split) for o in others), "seeds 0, 1, 2 and 3 give the same split: use the seed"
        checked += 1
    return (f"by woman, stratified within one woman of the target, deterministic per seed, on {checked} made-up "
            "manifests.")


def _leaked(images: pd.DataFrame, test_ids) -> int:
    is_test = images["image_id"].isin(set(test_ids))
    return int(is_test.groupby(images["patient_id"]).nunique().gt(1).sum())


@check("1.4 Leaked women", hint="A woman leaks when she has at least one image among the test images AND at least "
       "one outside them. Count women, not images.",
       recipe="Mark each image test or not (images['image_id'].isin(test_image_ids)), group the marks by "
       "patient_id, and count the women whose group holds both values (nunique() == 2); return an int.")
def check_leaked_women(fn: Callable[[pd.DataFrame, list[str]], int], trials: int = 4) -> str:
    """``fn(images, test_image_ids)`` against a count by patient and against
    :func:`mammo_utils.prepare.split.image_level_leakage` on its own random split by image."""
    for trial in range(trials):
        images = toy_manifest(40 + 10 * trial, (("CC", "MLO"), ("MLO",))[trial % 2], seed=trial).reset_index(drop=True)
        fraction = (0.25, 0.5, 0.1, 0.3)[trial % 4]
        rng = np.random.default_rng(trial)  # the same draw as image_level_leakage(images, fraction, seed=trial)
        test_ids = images["image_id"].to_numpy()[rng.permutation(len(images))[: int(round(len(images) * fraction))]]
        got = fn(images.copy(), list(test_ids))
        if got is None:
            raise NotImplementedError
        expected = image_level_leakage(images, test_fraction=fraction, seed=trial)["patients_in_both"]
        assert _leaked(images, test_ids) == expected, "the check's own count disagrees with the package; report it"
        assert int(got) == expected, (
            f"with {len(test_ids)} of {len(images)} images in test you counted {got} leaked women; "
            f"{expected} of {images['patient_id'].nunique()} women have images on both sides")
    return f"matches split.image_level_leakage on {trials} random splits by image."
