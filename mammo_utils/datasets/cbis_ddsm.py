"""CBIS-DDSM (Lee et al. 2017) from TCIA's four case-description CSVs, read in place.

One CSV row is one abnormality on one view; one image is one full-mammogram DICOM series, named by its TCIA
Subject ID (``Mass-Training_P_00001_LEFT_CC``). The same physical film can appear twice, once as ``Mass-``
and once as ``Calc-``: TCIA made two series of it; patient-level splits keep both on the same side.

Labels (see ``data_manifests/README.md``): every CBIS-DDSM image has a finding, so ``abnormal`` is 1 on every
row (there are no normal images). ``malignant`` is 1 when any of the image's rows is ``MALIGNANT``;
``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` are both benign (0). Density 1-4 becomes A-D (0 stays empty);
``birads`` is the image's highest ``assessment``. Official split from the file name (Training -> train,
Test -> test), then val carved from train by patient. 31 patients are in both official files; to keep
patients on one side, all their images go to test.

Folder layouts of a TCIA download, both resolved (paths are relative to the folder holding the CSVs):

- classic: ``<Subject ID>/<StudyInstanceUID>/<SeriesInstanceUID>/000000.dcm`` (the CSVs' own form);
- NBIA Data Retriever "descriptive": ``CBIS-DDSM/<Subject ID>/<date-desc>/<n-series desc-uid5>/1-1.dcm``,
  found through ``metadata.csv`` (Series UID -> File Location).

Without images, paths keep the CSVs' classic form and width/height are -1.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .. import manifest
from ..errors import DataError
from . import committed

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger(__name__)

NAME = "cbis-ddsm"
HAS_OFFICIAL_SPLIT = True
FILES = {
    "mass_case_description_train_set.csv": ("mass", "train"),
    "mass_case_description_test_set.csv": ("mass", "test"),
    "calc_case_description_train_set.csv": ("calcification", "train"),
    "calc_case_description_test_set.csv": ("calcification", "test"),
}
PATHOLOGY_MALIGNANT = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
DENSITY = {"0": "", "1": "A", "2": "B", "3": "C", "4": "D"}
ASSESSMENTS = {"0", "1", "2", "3", "4", "5"}
HOW_TO_GET = ("Put TCIA's four CBIS-DDSM case-description CSVs (and metadata.csv of your NBIA download, if "
              "any) in <data dir>/cbis-ddsm or <sources dir>/cbis-ddsm; see data_manifests/README.md.")


def read_descriptions(root: Path) -> pd.DataFrame:
    """The four CSVs as one table with normalised column names and stripped paths.

    Columns: ``file, row, kind, official_split, patient_id, density, side, view, abnormality_id, assessment,
    pathology, image_path, crop_path, mask_path``. ``row`` is the 1-based data row in ``file``.

    Raises:
        DataError: a CSV is missing, or a value is unknown, naming the file and row.
    """
    root = Path(root)
    missing = [f for f in FILES if not (root / f).is_file()]
    if missing:
        raise DataError(f"{root} lacks {', '.join(missing)}. {HOW_TO_GET}")
    parts = []
    for name, (kind, split) in FILES.items():
        df = pd.read_csv(root / name, dtype=str, keep_default_na=False)
        df = df.rename(columns={"breast density": "breast_density"}).map(str.strip)
        out = pd.DataFrame({
            "file": name, "row": np.arange(1, len(df) + 1), "kind": kind, "official_split": split,
            "patient_id": df["patient_id"], "density": df["breast_density"], "side": df["left or right breast"],
            "view": df["image view"], "abnormality_id": df["abnormality id"], "assessment": df["assessment"],
            "pathology": df["pathology"], "image_path": df["image file path"],
            "crop_path": df["cropped image file path"], "mask_path": df["ROI mask file path"],
        })
        checks = {
            "pathology": set(PATHOLOGY_MALIGNANT), "density": set(DENSITY), "side": {"LEFT", "RIGHT"},
            "view": {"CC", "MLO"}, "assessment": ASSESSMENTS,
        }
        for col, allowed in checks.items():
            bad = ~out[col].isin(allowed)
            if bad.any():
                rows = ", ".join(f"row {r} ({v!r})" for r, v in zip(out.loc[bad, "row"][:5], out.loc[bad, col][:5],
                                                                       strict=True))
                raise DataError(f"{root / name}: unknown {col} in {rows}; expected one of {sorted(allowed)}.")
        parts.append(out)
    return pd.concat(parts, ignore_index=True)


class _Resolver:
    """Find a CSV path's file in a classic or descriptive TCIA download under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.locations: dict[str, str] = {}
        meta = self.root / "metadata.csv"
        if meta.is_file():
            m = pd.read_csv(meta, dtype=str, keep_default_na=False, usecols=["Series UID", "File Location"])
            loc = m["File Location"].str.replace("\\", "/", regex=False).str.removeprefix("./").str.strip("/")
            self.locations = dict(zip(m["Series UID"], loc, strict=True))

    def files(self, csv_path: str) -> list[str]:
        """The ``.dcm`` files (relative, sorted) of the series a CSV path points into; [] when absent."""
        p = PurePosixPath(csv_path)
        folders = [str(p.parent)]
        if len(p.parts) >= 3 and p.parts[2] in self.locations:
            folders.append(self.locations[p.parts[2]])
        for folder in folders:
            if (self.root / folder).is_dir():
                found = sorted(f"{folder}/{f.name}" for f in (self.root / folder).glob("*.dcm"))
                if found:
                    return found
        return []

    def full_image(self, csv_path: str) -> str:
        found = self.files(csv_path)
        same_name = [f for f in found if PurePosixPath(f).name == PurePosixPath(csv_path).name]
        return (same_name or found or [csv_path])[0]

    def mask(self, crop_path: str, mask_path: str) -> str:
        # The crop/mask numbering is inconsistent across TCIA's files, so decide by size: the mask is
        # full-image sized, the crop a few hundred pixels a side.
        found = sorted(set(self.files(crop_path)) | set(self.files(mask_path)))
        if len(found) <= 1:
            return (found or [mask_path])[0]
        return max(found, key=lambda f: np.prod(dicom_size(self.root / f)))


@cache
def dicom_size(path: Path) -> tuple[int, int]:
    """``(width, height)`` from a DICOM header, ``(-1, -1)`` when it cannot be read."""
    import pydicom

    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
        return int(ds.Columns), int(ds.Rows)
    except Exception:  # a missing or unreadable header only leaves the size unknown
        return -1, -1


def _images(rows: pd.DataFrame, resolver: _Resolver) -> pd.DataFrame:
    rows = rows.assign(image_id=rows["image_path"].map(lambda p: PurePosixPath(p).parts[0]))
    out = []
    for image_id, g in rows.groupby("image_id", sort=True):
        if g["patient_id"].nunique() > 1 or g["official_split"].nunique() > 1:
            raise DataError(f"CBIS-DDSM image {image_id} has rows with different patients or splits: "
                            f"{g['file'].iloc[0]} rows {g['row'].tolist()[:5]}.")
        path = resolver.full_image(g["image_path"].iloc[0])
        width, height = dicom_size(resolver.root / path) if (resolver.root / path).is_file() else (-1, -1)
        out.append(dict(
            image_id=image_id, patient_id=g["patient_id"].iloc[0], dataset=NAME, path=path,
            laterality=g["side"].iloc[0][0], view=g["view"].iloc[0], density=DENSITY[g["density"].iloc[0]],
            abnormal=1, malignant=int(g["pathology"].map(PATHOLOGY_MALIGNANT).max()),
            birads=str(g["assessment"].astype(int).max()), source_label=";".join(sorted(set(g["pathology"]))),
            split=g["official_split"].iloc[0], fold=-1, width=width, height=height,
        ))
    return pd.DataFrame(out, columns=manifest.IMAGE_COLUMNS)


def _lesions(rows: pd.DataFrame, resolver: _Resolver) -> pd.DataFrame:
    image_id = rows["image_path"].map(lambda p: PurePosixPath(p).parts[0])
    les = pd.DataFrame({
        "image_id": image_id, "lesion_id": image_id + "_" + rows["abnormality_id"], "kind": rows["kind"],
        "severity": rows["pathology"].map(lambda p: "M" if PATHOLOGY_MALIGNANT[p] else "B"), "shape": "mask",
        **{c: np.nan for c in ("cx", "cy", "r", "x0", "y0", "x1", "y1")},
        "mask_path": [resolver.mask(c, m) for c, m in zip(rows["crop_path"], rows["mask_path"], strict=True)],
    })
    dup = les["lesion_id"].duplicated(keep=False)
    if dup.any():
        raise DataError(f"CBIS-DDSM: duplicate abnormality ids {les.loc[dup, 'lesion_id'].tolist()[:5]} "
                        f"(files {sorted(set(rows.loc[dup, 'file']))}).")
    return les[manifest.LESION_COLUMNS].reset_index(drop=True)


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` from the CSVs in ``root``, resolving files of a download when present."""
    root = Path(root)
    rows = read_descriptions(root)
    resolver = _Resolver(root)
    images = _images(rows, resolver)
    both = set(images.loc[images["split"] == "train", "patient_id"]) & set(
        images.loc[images["split"] == "test", "patient_id"])
    if both:
        log.info("cbis-ddsm: %d patients are in both official files; all their images go to test", len(both))
    images = manifest.assign_splits(
        images, val_fraction=cfg.split.val_fraction, test_fraction=cfg.split.test_fraction,
        n_folds=cfg.split.n_folds, seed=cfg.seed, keep_test=True,
    )
    lesions = _lesions(rows, resolver)
    manifest.validate(images, lesions, source=str(root))
    return images, lesions


def locate(cfg: Config) -> Path:
    """The folder holding the four CSVs: ``<data dir>/cbis-ddsm`` first, else ``<sources dir>/cbis-ddsm``."""
    candidates = [Path(cfg.data_dir) / NAME] + ([Path(cfg.sources_dir) / NAME] if cfg.sources_dir else [])
    for folder in candidates:
        if all((folder / f).is_file() for f in FILES):
            return folder
    raise DataError(f"No CBIS-DDSM case-description CSVs in {' or '.join(map(str, candidates))} "
                    f"(looked for {', '.join(FILES)}). {HOW_TO_GET}")


def write_manifest(folder: Path, source_root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Write the committed manifest (seed 0, default split fractions, 5 folds) into ``folder``."""
    return committed.write_manifest(build_manifest, folder, source_root)


def main(argv: list[str] | None = None) -> None:
    committed.main(build_manifest, NAME, __doc__.splitlines()[0], "folder holding the four CSVs", argv)


if __name__ == "__main__":
    main()
