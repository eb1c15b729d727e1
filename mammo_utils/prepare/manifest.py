"""The manifest: one row per image (``images.csv``) and one per finding (``lesions.csv``).

Schema (``data_manifests/README.md`` tells it per dataset): ``images.csv`` has :data:`IMAGE_COLUMNS`; ``lesions.csv`` has :data:`LESION_COLUMNS`.
``malignant`` means "has a malignant finding" (normal images are 0); ``abnormal`` means "has any finding".
Coordinates are in the original image's pixels, origin top-left. Validation is always on: among other things,
a patient in two splits or two folds is an error that names the rows (the split itself is :mod:`.split`'s).
"""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.runs.files import atomic_write_text

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
