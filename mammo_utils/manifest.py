"""The manifest: one row per image (``images.csv``) and one per finding (``lesions.csv``).

Schema (``data_manifests/README.md`` tells it per dataset): ``images.csv`` has :data:`IMAGE_COLUMNS`; ``lesions.csv`` has :data:`LESION_COLUMNS`.
``malignant`` means "has a malignant finding" (normal images are 0); ``abnormal`` means "has any finding".
Coordinates are in the original image's pixels, origin top-left. Splits and folds are by patient,
stratified on the patient's worst label, seeded. Validation is always on.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError
from .paths import atomic_write_text

IMAGE_COLUMNS = [
    "image_id", "patient_id", "dataset", "path", "laterality", "view", "density", "abnormal", "malignant",
    "birads", "source_label", "split", "fold", "width", "height",
]
LESION_COLUMNS = [
    "image_id", "lesion_id", "kind", "severity", "shape", "cx", "cy", "r", "x0", "y0", "x1", "y1", "mask_path",
]
LESION_KINDS = ("mass", "calcification", "distortion", "asymmetry", "other")
SPLITS = ("train", "val", "test")
_STR_COLUMNS = ["image_id", "patient_id", "dataset", "path", "laterality", "view", "density", "birads",
                "source_label", "split"]


def _rows(df: pd.DataFrame, mask: pd.Series, limit: int = 5) -> str:
    ids = df.loc[mask, "image_id"].astype(str).tolist() if "image_id" in df else list(df.index[mask])
    more = f" and {len(ids) - limit} more" if len(ids) > limit else ""
    return ", ".join(ids[:limit]) + more


def validate(
    images: pd.DataFrame,
    lesions: pd.DataFrame | None = None,
    root: Path | None = None,
    source: str = "manifest",
) -> None:
    """Check a manifest; raise :class:`DataError` naming the offending rows.

    Args:
        images: the ``images.csv`` table.
        lesions: the ``lesions.csv`` table (optional).
        root: the dataset's folder; when given, every ``path`` must exist under it.
        source: how to name the manifest in messages (e.g. its file path).
    """
    missing = [c for c in IMAGE_COLUMNS if c not in images.columns]
    if missing:
        raise DataError(f"{source}: images table lacks columns {missing}. Expected {IMAGE_COLUMNS}.")
    if images.empty:
        raise DataError(f"{source}: no images. Check the dataset folder and run `prepare` again.")
    dup = images["image_id"].duplicated(keep=False)
    if dup.any():
        raise DataError(f"{source}: duplicate image_id in rows {_rows(images, dup)}.")
    for col in ("abnormal", "malignant"):
        bad = ~images[col].isin([0, 1])
        if bad.any():
            raise DataError(f"{source}: column {col} must be 0 or 1; rows {_rows(images, bad)} are not.")
    bad = (images["malignant"] == 1) & (images["abnormal"] == 0)
    if bad.any():
        raise DataError(f"{source}: malignant but not abnormal in rows {_rows(images, bad)}.")
    bad = ~images["laterality"].isin(["L", "R"])
    if bad.any():
        raise DataError(f"{source}: laterality must be L or R; rows {_rows(images, bad)} are not.")
    bad = ~images["split"].isin(list(SPLITS) + [""])
    if bad.any():
        raise DataError(f"{source}: split must be train, val or test; rows {_rows(images, bad)} are not.")
    for col in ("split", "fold"):
        assigned = images[images[col].astype(str) != ""]
        per_patient = assigned.groupby("patient_id")[col].nunique()
        leaking = per_patient[per_patient > 1].index
        if len(leaking):
            mask = images["patient_id"].isin(leaking)
            raise DataError(
                f"{source}: patients {', '.join(map(str, leaking[:5]))} are in more than one {col} "
                f"(rows {_rows(images, mask)}). Splits must be by patient."
            )
    if root is not None:
        exists = images["path"].map(lambda p: (Path(root) / p).exists())
        if not exists.any():
            raise DataError(
                f"{source}: none of the {len(images)} image files it lists is under {root} (first: "
                f"{images['path'].iloc[0]}). Download the images into that folder; data_manifests/README.md gives "
                "the layout each dataset expects."
            )
        if not exists.all():
            raise DataError(
                f"{source}: {int((~exists).sum())} image files are missing under {root} "
                f"(rows {_rows(images, ~exists)}). Restore them, or pass --keep-going to skip them (each is listed)."
            )
    if lesions is not None and not lesions.empty:
        missing = [c for c in LESION_COLUMNS if c not in lesions.columns]
        if missing:
            raise DataError(f"{source}: lesions table lacks columns {missing}.")
        orphan = ~lesions["image_id"].isin(images["image_id"])
        if orphan.any():
            raise DataError(f"{source}: lesions for unknown images in rows {_rows(lesions, orphan)}.")
        bad = ~lesions["kind"].isin(LESION_KINDS)
        if bad.any():
            raise DataError(f"{source}: unknown lesion kind in rows {_rows(lesions, bad)}; use {LESION_KINDS}.")


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


def _to_csv(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False, lineterminator="\n")
    return buf.getvalue()


def save_manifest(folder: Path, images: pd.DataFrame, lesions: pd.DataFrame) -> None:
    """Write ``images.csv`` and ``lesions.csv`` atomically, columns in schema order."""
    folder = Path(folder)
    validate(images, lesions, source=str(folder))
    atomic_write_text(folder / "images.csv", _to_csv(images[IMAGE_COLUMNS]))
    les = lesions if not lesions.empty else pd.DataFrame(columns=LESION_COLUMNS)
    atomic_write_text(folder / "lesions.csv", _to_csv(les[LESION_COLUMNS]))


def load_manifest(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Read and validate ``images.csv`` and ``lesions.csv`` from ``folder``."""
    folder = Path(folder)
    img_path = folder / "images.csv"
    if not img_path.exists():
        raise DataError(f"No images.csv in {folder}. Run `python -m mammo_utils prepare` first.")
    images = pd.read_csv(img_path, dtype={c: str for c in _STR_COLUMNS}, keep_default_na=False)
    for col in ("abnormal", "malignant", "width", "height"):
        images[col] = pd.to_numeric(images[col], errors="coerce").fillna(-1).astype(int)
    images["fold"] = pd.to_numeric(images["fold"], errors="coerce").fillna(-1).astype(int)
    les_path = folder / "lesions.csv"
    if les_path.exists():
        lesions = pd.read_csv(
            les_path,
            dtype={"image_id": str, "lesion_id": str, "kind": str, "severity": str, "shape": str, "mask_path": str},
            keep_default_na=False,
        )
        for col in ("cx", "cy", "r", "x0", "y0", "x1", "y1"):
            lesions[col] = pd.to_numeric(lesions[col], errors="coerce")
    else:
        lesions = pd.DataFrame(columns=LESION_COLUMNS)
    validate(images, lesions, source=str(img_path))
    return images, lesions


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
