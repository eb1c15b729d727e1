"""CMMD, the Chinese Mammography Database (Cui et al. 2021, TCIA), from its clinical table plus the images.

- ``CMMD_clinicaldata_revision.csv`` has one row per labelled breast (``ID1``, ``LeftRight``), each with a
  CC and an MLO image. ``classification`` Benign -> abnormal 1, malignant 0; Malignant -> abnormal 1,
  malignant 1. Every labelled breast has a biopsied finding: CMMD has no normal images. No lesion marks.
- With the DICOMs present (``CMMD/<ID1>/<study>/<series>/1-<n>.dcm``, located through TCIA's
  ``metadata.csv``), laterality and view come from each file's DICOM tags; images of a breast with no
  clinical row (the other breast in many 4-image series) have no label and are left out, with a count.
- Without the DICOMs, the manifest lists the expected images from the table alone (laterality from
  ``LeftRight``, one CC and one MLO per breast) with ``path`` set to the patient's series folder; such a
  manifest is for counting, not for training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.split import assign_splits

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

NAME = "cmmd"
CLINICAL_CSV = "CMMD_clinicaldata_revision.csv"
METADATA_CSV = "metadata.csv"
CLASSES = {"Benign": 0, "Malignant": 1}
ABNORMALITIES = {"mass", "calcification", "both"}
HOW_TO_GET = ("Put CMMD_clinicaldata_revision.csv (TCIA's xlsx saved as CSV), metadata.csv and the CMMD/ "
              "folder of your NBIA download in <data dir>/cmmd.")


def read_clinical(root: Path) -> pd.DataFrame:
    """The clinical table, checked: known classes and abnormalities, L/R, one row per breast."""
    path = Path(root) / CLINICAL_CSV
    if not path.is_file():
        raise DataError(f"No {CLINICAL_CSV} in {root}. {HOW_TO_GET}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False).map(str.strip)
    for col, allowed in (("classification", set(CLASSES)), ("LeftRight", {"L", "R"}),
                         ("abnormality", ABNORMALITIES)):
        if col not in df.columns:
            raise DataError(f"{path}: no column {col!r}.")
        bad = ~df[col].isin(allowed)
        if bad.any():
            lines = [f"line {i + 2} ({v!r})" for i, v in zip(df.index[bad][:5], df.loc[bad, col][:5], strict=True)]
            raise DataError(f"{path}: unknown {col} in {', '.join(lines)}; expected {sorted(allowed)}.")
    dup = df.duplicated(["ID1", "LeftRight"], keep=False)
    if dup.any():
        raise DataError(f"{path}: breasts listed twice on lines {[i + 2 for i in df.index[dup][:5]]}.")
    return df


def _series_folders(root: Path) -> dict[str, str]:
    meta = root / METADATA_CSV
    if not meta.is_file():
        return {}
    m = pd.read_csv(meta, dtype=str, keep_default_na=False, usecols=["Subject ID", "File Location"])
    loc = m["File Location"].str.replace("\\", "/", regex=False).str.removeprefix("./").str.strip("/")
    return dict(zip(m["Subject ID"], loc, strict=True))


def _dicom_tags(path: Path) -> tuple[str, str, int, int]:
    """(laterality, view, width, height) from a DICOM header; empty or -1 where a tag is missing."""
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True)
    lat = str(ds.get("ImageLaterality", "") or ds.get("Laterality", "")).strip().upper()
    view = str(ds.get("ViewPosition", "")).strip().upper()
    return lat, view, int(ds.get("Columns", -1)), int(ds.get("Rows", -1))


def _row(r: pd.Series, image_id: str, path: str, lat: str, view: str, width: int, height: int) -> dict:
    return dict(image_id=image_id, patient_id=r["ID1"], dataset=NAME, path=path, laterality=lat, view=view,
                density="", abnormal=1, malignant=CLASSES[r["classification"]], birads="",
                source_label=f"{r['classification']} {r['abnormality']}", split="", fold=-1, width=width,
                height=height)


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` (no lesions: CMMD has no marks) from the table and, if present, the DICOMs."""
    root = Path(root)
    clinical = read_clinical(root)
    folders = _series_folders(root)
    label = {(r["ID1"], r["LeftRight"]): r for _, r in clinical.iterrows()}
    n_breasts = clinical.groupby("ID1").size()
    rows, unlabelled = [], 0
    for _, r in clinical.iterrows():
        pid, side = r["ID1"], r["LeftRight"]
        folder = folders.get(pid, f"CMMD/{pid}")
        files = sorted((root / folder).glob("*.dcm")) if (root / folder).is_dir() else []
        if not files:
            rows += [_row(r, f"{pid}_{side}_{v}", folder, side, v, -1, -1) for v in ("CC", "MLO")]
            continue
        if side != clinical.loc[clinical["ID1"] == pid, "LeftRight"].iloc[0]:
            continue  # a two-breast patient's files are handled once, from the first row
        for f in files:
            try:
                lat, view, width, height = _dicom_tags(f)
            except Exception as exc:  # a damaged file is named, not skipped silently
                raise DataError(f"{f} is not a readable DICOM ({exc}). Download it again.") from None
            if lat not in ("L", "R") and n_breasts[pid] == 1:
                lat = side  # no laterality tag: the only labelled breast of this patient
            if (pid, lat) not in label:
                unlabelled += 1
                continue
            rows.append(_row(label[(pid, lat)], f"{pid}_{f.stem}", f.relative_to(root).as_posix(), lat, view,
                             width, height))
    if unlabelled:
        log.info("cmmd: %d images of breasts without a clinical row (no label) were left out", unlabelled)
    images = assign_splits(
        pd.DataFrame(rows, columns=manifest.IMAGE_COLUMNS), val_fraction=cfg.split.val_fraction,
        test_fraction=cfg.split.test_fraction, n_folds=cfg.split.n_folds, seed=cfg.seed,
    )
    lesions = pd.DataFrame(columns=manifest.LESION_COLUMNS)
    manifest.validate(images, lesions, source=str(root / CLINICAL_CSV))
    return images, lesions


def locate(cfg: Config) -> Path:
    """``<data dir>/cmmd`` when it holds the clinical table, else ``<sources dir>/cmmd``."""
    candidates = [Path(cfg.data_dir) / NAME] + ([Path(cfg.sources_dir) / NAME] if cfg.sources_dir else [])
    for folder in candidates:
        if (folder / CLINICAL_CSV).is_file():
            return folder
    raise DataError(f"No {CLINICAL_CSV} in {' or '.join(map(str, candidates))}. {HOW_TO_GET}")
