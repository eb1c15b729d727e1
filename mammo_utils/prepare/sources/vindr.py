"""VinDr-Mammo (Nguyen et al. 2023) from the user's ``breast-level_annotations.csv`` and
``finding_annotations.csv`` (PhysioNet, restricted access).

- VinDr has no patient IDs; one study is one woman's four-view exam, so ``patient_id = study_id``.
- Official split: ``training`` -> train, ``test`` -> test; val is carved from train by patient.
- BI-RADS proxy (no biopsy labels): ``breast_birads`` 1 normal (abnormal 0); 2-3 benign finding
  (abnormal 1, malignant 0); 4-5 suspicious, counted malignant (abnormal 1, malignant 1). A proxy, not
  pathology. ``DENSITY A``-``D`` become A-D.
- Boxes from ``finding_annotations.csv`` are lesions (shape "box"), clipped to the image (some are negative).
  Lesion severity from ``finding_birads`` by the same proxy (empty when absent).
- Images at ``images/<study_id>/<image_id>.dicom``.
"""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.split import assign_splits

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

NAME = "vindr"
BREAST_CSV = "breast-level_annotations.csv"
FINDING_CSV = "finding_annotations.csv"
BREAST_COLUMNS = ["study_id", "series_id", "image_id", "laterality", "view_position", "height", "width",
                  "breast_birads", "breast_density", "split"]
FINDING_COLUMNS = BREAST_COLUMNS[:-1] + ["finding_categories", "finding_birads", "xmin", "ymin", "xmax", "ymax",
                                         "split"]
BIRADS = {"1": (0, 0), "2": (1, 0), "3": (1, 0), "4": (1, 1), "5": (1, 1)}  # -> (abnormal, malignant)
SPLITS = {"training": "train", "test": "test"}
KINDS = {"Mass": "mass", "Suspicious Calcification": "calcification", "Architectural Distortion": "distortion",
         "Asymmetry": "asymmetry", "Focal Asymmetry": "asymmetry", "Global Asymmetry": "asymmetry"}
HOW_TO_GET = ("Download VinDr-Mammo from PhysioNet (credentialed access) and put its CSVs and images/ in "
              "<data dir>/vindr.")


def _read(path: Path, columns: list[str]) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"No {path.name} in {path.parent}. {HOW_TO_GET}")
    df = pd.read_csv(path, dtype=str, keep_default_na=False).map(str.strip)
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise DataError(f"{path}: columns {missing} are missing; expected {columns}.")
    return df


def _value(series: pd.Series, prefix: str, allowed: set[str], path: Path, col: str) -> pd.Series:
    """Strip ``prefix`` (``BI-RADS 4`` -> ``4``) and check the values, naming bad lines."""
    out = series.str.removeprefix(prefix).str.strip()
    bad = ~out.isin(allowed)
    if bad.any():
        lines = ", ".join(f"line {i + 2} ({v!r})" for i, v in zip(series.index[bad][:5], series[bad][:5],
                                                                   strict=True))
        raise DataError(f"{path}: unknown {col} in {lines}; expected {prefix}{sorted(allowed - {''})}.")
    return out


def _kind(categories: str) -> str:
    try:
        cats = ast.literal_eval(categories) if categories.startswith("[") else [categories]
    except (ValueError, SyntaxError):
        cats = [categories]
    kinds = [KINDS[c] for c in cats if c in KINDS]
    return kinds[0] if kinds else "other"


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` from the two VinDr-Mammo CSVs in ``root``."""
    root = Path(root)
    bpath, fpath = root / BREAST_CSV, root / FINDING_CSV
    b = _read(bpath, BREAST_COLUMNS)
    birads = _value(b["breast_birads"], "BI-RADS ", set(BIRADS), bpath, "breast_birads")
    density = _value(b["breast_density"], "DENSITY ", {"A", "B", "C", "D", ""}, bpath, "breast_density")
    split = _value(b["split"], "", set(SPLITS), bpath, "split").map(SPLITS)
    images = pd.DataFrame({
        "image_id": b["image_id"], "patient_id": b["study_id"], "dataset": NAME,
        "path": "images/" + b["study_id"] + "/" + b["image_id"] + ".dicom", "laterality": b["laterality"],
        "view": b["view_position"], "density": density, "abnormal": birads.map(lambda v: BIRADS[v][0]),
        "malignant": birads.map(lambda v: BIRADS[v][1]), "birads": birads, "source_label": b["breast_birads"],
        "split": split, "fold": -1, "width": pd.to_numeric(b["width"], errors="coerce").fillna(-1).astype(int),
        "height": pd.to_numeric(b["height"], errors="coerce").fillna(-1).astype(int),
    })
    images = assign_splits(
        images, val_fraction=cfg.split.val_fraction, test_fraction=cfg.split.test_fraction,
        n_folds=cfg.split.n_folds, seed=cfg.seed, keep_test=True,
    )
    f = _read(fpath, FINDING_COLUMNS)
    fb = _value(f["finding_birads"], "BI-RADS ", set(BIRADS) | {""}, fpath, "finding_birads")
    coords = f[["xmin", "ymin", "xmax", "ymax"]].apply(pd.to_numeric, errors="coerce")
    has_box = coords.notna().all(axis=1) & ~f["finding_categories"].str.contains("No Finding")
    f, fb, coords = f[has_box], fb[has_box], coords[has_box]
    unknown = ~f["image_id"].isin(images["image_id"])
    if unknown.any():
        raise DataError(f"{fpath}: lines {[i + 2 for i in f.index[unknown][:5]]} name images that are not in "
                        f"{BREAST_CSV}.")
    w = pd.to_numeric(f["width"], errors="coerce").fillna(np.inf) - 1
    h = pd.to_numeric(f["height"], errors="coerce").fillna(np.inf) - 1
    x0, x1 = coords["xmin"].clip(lower=0).clip(upper=w), coords["xmax"].clip(lower=0).clip(upper=w)
    y0, y1 = coords["ymin"].clip(lower=0).clip(upper=h), coords["ymax"].clip(lower=0).clip(upper=h)
    lesions = pd.DataFrame({
        "image_id": f["image_id"], "lesion_id": f["image_id"] + "-" + f.groupby("image_id").cumcount().add(1).astype(str),
        "kind": f["finding_categories"].map(_kind),
        "severity": fb.map(lambda v: "" if not v else "M" if BIRADS[v][1] else "B"), "shape": "box",
        "cx": (x0 + x1) / 2, "cy": (y0 + y1) / 2, "r": np.nan, "x0": x0, "y0": y0, "x1": x1, "y1": y1,
        "mask_path": "",
    }).reset_index(drop=True)
    manifest.validate(images, lesions, source=str(bpath))
    return images, lesions


def locate(cfg: Config) -> Path:
    """``<data dir>/vindr`` (or ``<sources dir>/vindr``) holding the two annotation CSVs."""
    candidates = [Path(cfg.data_dir) / NAME] + ([Path(cfg.sources_dir) / NAME] if cfg.sources_dir else [])
    for folder in candidates:
        if (folder / BREAST_CSV).is_file() and (folder / FINDING_CSV).is_file():
            return folder
    raise DataError(f"No {BREAST_CSV} and {FINDING_CSV} in {' or '.join(map(str, candidates))}. {HOW_TO_GET}")
