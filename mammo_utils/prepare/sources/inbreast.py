"""INbreast (Moreira et al. 2012) from ``INbreast.csv`` plus the DICOM file names, under the user's terms.

``INbreast.csv`` has no patient IDs (``removed``), so images are grouped by woman through the DICOM file
name ``<File Name>_<hash>_MG_<L|R>_<CC|ML>_ANON.dcm``: the ``<hash>`` part is the same for one woman.

Labels (BI-RADS mapping, the common convention): BI-RADS 1 is normal (abnormal 0, malignant 0); 2 and 3
are benign findings (abnormal 1, malignant 0); 4a, 4b, 4c, 5 and 6 are suspicious or proven malignant
(abnormal 1, malignant 1). ACR density 1-4 becomes A-D (blank stays empty). Lesion contours are read from
``AllXML/<File Name>.xml`` (OsiriX plist) when present, as bounding boxes (shape "box").
"""

from __future__ import annotations

import logging
import plistlib
import re
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources.cbis_ddsm import dicom_size
from mammo_utils.prepare.split import assign_splits

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

NAME = "inbreast"
CSV_NAME = "INbreast.csv"
COLUMNS = ["Patient ID", "Patient age", "Laterality", "View", "Acquisition date", "File Name", "ACR", "Bi-Rads"]
BIRADS = {"1": (0, 0), "2": (1, 0), "3": (1, 0), "4a": (1, 1), "4b": (1, 1), "4c": (1, 1), "5": (1, 1),
          "6": (1, 1)}  # value -> (abnormal, malignant)
DENSITY = {"": "", "1": "A", "2": "B", "3": "C", "4": "D"}
ROI_KINDS = {"mass": "mass", "calcification": "calcification", "cluster": "calcification",
             "distortion": "distortion", "asymmetry": "asymmetry"}
_DICOM = re.compile(r"^(\d+)_([^_]+)_MG_")
HOW_TO_GET = ("INbreast is distributed by its authors on request; put INbreast.csv and AllDICOMs/ (and AllXML/ "
              "if you have it) in <data dir>/inbreast.")


def _dicoms(root: Path) -> dict[str, tuple[str, str]]:
    """``{File Name: (relative DICOM path, woman's hash)}`` for every DICOM found under ``root``."""
    found: dict[str, tuple[str, str]] = {}
    for f in sorted(root.rglob("*.dcm")):
        m = _DICOM.match(f.name)
        if m:
            found[m.group(1)] = (f.relative_to(root).as_posix(), m.group(2))
    return found


def _points(text: str) -> tuple[float, float]:
    x, y = (float(v) for v in text.strip().strip("()").split(",")[:2])
    return x, y


def read_contours(xml: Path, image_id: str) -> list[dict]:
    """Lesions (shape "box", from the contour's extent) of one INbreast XML plist file."""
    try:
        with open(xml, "rb") as fh:
            doc = plistlib.load(fh)
    except Exception as exc:  # plistlib raises several types for a damaged file
        raise DataError(f"{xml} is not a readable INbreast XML (plist) file: {exc}.") from None
    rows = []
    for img in doc.get("Images", []):
        for roi in img.get("ROIs", []):
            pts = np.array([_points(p) for p in roi.get("Point_px", [])], dtype=float).reshape(-1, 2)
            if not len(pts):
                continue
            name = str(roi.get("Name", "")).strip().lower()
            x0, y0 = pts.min(axis=0).clip(min=0)
            x1, y1 = pts.max(axis=0)
            rows.append(dict(image_id=image_id, lesion_id=f"{image_id}-{len(rows) + 1}",
                             kind=ROI_KINDS.get(name, "other"), severity="", shape="box",
                             cx=(x0 + x1) / 2, cy=(y0 + y1) / 2, r=np.nan, x0=x0, y0=y0, x1=x1, y1=y1,
                             mask_path=""))
    return rows


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` from ``root/INbreast.csv``, the DICOM names and ``AllXML/`` when present."""
    root = Path(root)
    csv = root / CSV_NAME
    if not csv.is_file():
        raise DataError(f"No {CSV_NAME} in {root}. {HOW_TO_GET}")
    df = pd.read_csv(csv, sep=";", dtype=str, keep_default_na=False).map(str.strip)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{csv}: columns {missing} are missing; expected {COLUMNS}.")
    dicoms = _dicoms(root)
    if not dicoms:
        raise DataError(f"No INbreast DICOMs (<File Name>_<hash>_MG_*.dcm) under {root}: they are needed to "
                        f"group images by woman. {HOW_TO_GET}")
    images, lesions = [], []
    for n, r in enumerate(df.itertuples(index=False), 2):
        rec = dict(zip(COLUMNS, r, strict=False))
        where = f"{csv}, line {n}"
        name, birads = rec["File Name"], rec["Bi-Rads"].lower()
        if birads not in BIRADS:
            raise DataError(f"{where}: unknown Bi-Rads {rec['Bi-Rads']!r}; expected one of {sorted(BIRADS)}.")
        if rec["ACR"] not in DENSITY or rec["Laterality"] not in ("L", "R"):
            raise DataError(f"{where}: unknown ACR {rec['ACR']!r} or Laterality {rec['Laterality']!r}.")
        if name not in dicoms:
            raise DataError(f"{where}: no DICOM named {name}_*_MG_*.dcm under {root}.")
        path, woman = dicoms[name]
        width, height = dicom_size(root / path)
        abnormal, malignant = BIRADS[birads]
        images.append(dict(image_id=name, patient_id=woman, dataset=NAME, path=path,
                           laterality=rec["Laterality"], view=rec["View"], density=DENSITY[rec["ACR"]],
                           abnormal=abnormal, malignant=malignant, birads=birads,
                           source_label=f"BI-RADS {birads}", split="", fold=-1, width=width, height=height))
        xml = next((p for p in (root / "AllXML" / f"{name}.xml", root / f"{name}.xml") if p.is_file()), None)
        if xml is not None:
            lesions += read_contours(xml, name)
    images_df = assign_splits(
        pd.DataFrame(images, columns=manifest.IMAGE_COLUMNS), val_fraction=cfg.split.val_fraction,
        test_fraction=cfg.split.test_fraction, n_folds=cfg.split.n_folds, seed=cfg.seed,
    )
    lesions_df = pd.DataFrame(lesions, columns=manifest.LESION_COLUMNS)
    manifest.validate(images_df, lesions_df, source=str(csv))
    return images_df, lesions_df


def locate(cfg: Config) -> Path:
    """``<data dir>/inbreast`` (or ``<sources dir>/inbreast``) holding ``INbreast.csv``."""
    candidates = [Path(cfg.data_dir) / NAME] + ([Path(cfg.sources_dir) / NAME] if cfg.sources_dir else [])
    for folder in candidates:
        if (folder / CSV_NAME).is_file():
            return folder
    raise DataError(f"No {CSV_NAME} in {' or '.join(map(str, candidates))}. {HOW_TO_GET}")
