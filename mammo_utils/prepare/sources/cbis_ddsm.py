"""CBIS-DDSM (Lee et al. 2017) from TCIA's four case-description CSVs, read in place.

One CSV row is one abnormality on one view. One manifest image is one **film**: one woman's breast (side) in
one view, identified by ``(patient_id, side, view)``. TCIA published some films twice, as a ``Mass-`` and a
``Calc-`` full-mammogram series (Subject IDs ``Mass-Training_P_00016_LEFT_CC`` and
``Calc-Test_P_00016_LEFT_CC``): 71 films in this release, 16 of which have a malignant finding in one series
and only benign ones in the other. Counting them as two images would put the same pixels in the data twice,
in those 16 cases once as benign and once as malignant, so both series are merged into one row.

``image_id`` is ``<patient_id>_<side>_<view>`` (``P_00016_LEFT_CC``): the TCIA Subject ID without its
``Mass-Training_`` / ``Calc-Test_`` prefix. It names the film, not a series, so it is the same whichever
series (or official file) a film comes from, it is unique per film by construction, and it still reads as
TCIA's ID.

Labels over all of a film's findings, mass and calcification (see ``data_manifests/README.md``):

- ``abnormal`` is 1 on every row: every CBIS-DDSM film has a finding (there are no normal images);
- ``malignant`` is 1 when any finding is ``MALIGNANT``; ``BENIGN`` and ``BENIGN_WITHOUT_CALLBACK`` are both
  benign (0);
- ``birads`` is the highest ``assessment``; ``source_label`` the sorted set of pathologies, ``;``-joined;
- density 1-4 becomes A-D and 0 stays empty; should the findings of a film disagree, the highest density wins
  (the more cautious reading, as for ``birads``). The two series never disagree in this release; a
  disagreement is counted in the log.

Official split from the file name (Training -> train, Test -> test), then val carved from train by patient.
31 patients are in both official files (29 films have one series in each); to keep patients on one side,
all their films go to test.

``lesions.csv`` keeps every finding of both series, one row per CSV row, pointed at the merged film:
``lesion_id`` is ``<image_id>_<mass|calc>_<abnormality id>`` because abnormality ids restart at 1 in each
series.

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

from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources import committed
from mammo_utils.prepare.split import assign_splits

if TYPE_CHECKING:
    from mammo_utils.config import Config

log = logging.getLogger(__name__)

NAME = "cbis-ddsm"
FILES = {
    "mass_case_description_train_set.csv": ("mass", "train"),
    "mass_case_description_test_set.csv": ("mass", "test"),
    "calc_case_description_train_set.csv": ("calcification", "train"),
    "calc_case_description_test_set.csv": ("calcification", "test"),
}
PATHOLOGY_MALIGNANT = {"MALIGNANT": 1, "BENIGN": 0, "BENIGN_WITHOUT_CALLBACK": 0}
DENSITY = {"0": "", "1": "A", "2": "B", "3": "C", "4": "D"}
ASSESSMENTS = {"0", "1", "2", "3", "4", "5"}
LESION_ID_KIND = {"mass": "mass", "calcification": "calc"}  # the series kind as lesion ids spell it
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


def film_ids(rows: pd.DataFrame) -> pd.Series:
    """The film of each row of :func:`read_descriptions`, ``<patient_id>_<side>_<view>``: the image_id."""
    return rows["patient_id"] + "_" + rows["side"] + "_" + rows["view"]


def _check_series(rows: pd.DataFrame) -> None:
    """Every row's full-image series must be named after its own file, patient, side and view.

    The merge into films trusts ``patient_id``/side/view; a Subject ID that says otherwise means the row is
    mislabelled, and merging it would silently pair the wrong images.

    Raises:
        DataError: naming the file and row of the first mismatches.
    """
    series = rows["image_path"].map(lambda p: PurePosixPath(p).parts[0])
    expected = (rows["kind"].map({"mass": "Mass-", "calcification": "Calc-"})
                + rows["official_split"].map({"train": "Training_", "test": "Test_"}) + film_ids(rows))
    bad = series != expected
    if bad.any():
        first = zip(rows.loc[bad, "file"][:5], rows.loc[bad, "row"][:5], series[bad][:5], expected[bad][:5],
                    strict=True)
        where = "; ".join(f"{f} row {r} ({s!r}, expected {e!r})" for f, r, s, e in first)
        raise DataError(f"CBIS-DDSM: image file path names another series than the row's file, patient_id, "
                        f"side and view in {where}; fix those rows' values or paths.")


def _images(rows: pd.DataFrame, resolver: _Resolver) -> pd.DataFrame:
    out = []
    density_conflicts = 0
    for image_id, g in rows.groupby("image_id", sort=True):
        # Both series of a film hold the same film (in metadata.csv the full images of all 71 Mass/Calc pairs
        # have identical file sizes), so either DICOM will do. Take the Mass series when there is one, and its
        # smallest path, so that the choice never depends on row or file order.
        source = g[g["kind"] == "mass"] if (g["kind"] == "mass").any() else g
        path = resolver.full_image(source["image_path"].min())
        width, height = dicom_size(resolver.root / path) if (resolver.root / path).is_file() else (-1, -1)
        densities = sorted(set(g["density"]) - {"0"})  # 0 is "not assessed", not a reading to weigh
        density_conflicts += len(densities) > 1
        out.append(dict(
            image_id=image_id, patient_id=g["patient_id"].iloc[0], dataset=NAME, path=path,
            laterality=g["side"].iloc[0][0], view=g["view"].iloc[0],
            density=DENSITY[densities[-1]] if densities else "",
            abnormal=1, malignant=int(g["pathology"].map(PATHOLOGY_MALIGNANT).max()),
            birads=str(g["assessment"].astype(int).max()), source_label=";".join(sorted(set(g["pathology"]))),
            # A film in both official files belongs to a patient in both, whom the split sends wholly to test.
            split="test" if (g["official_split"] == "test").any() else "train", fold=-1,
            width=width, height=height,
        ))
    if density_conflicts:
        log.info("cbis-ddsm: %d films have findings of different densities; the highest is kept",
                 density_conflicts)
    return pd.DataFrame(out, columns=manifest.IMAGE_COLUMNS)


def _lesions(rows: pd.DataFrame, resolver: _Resolver) -> pd.DataFrame:
    # Abnormality ids restart at 1 in each series, so the series' kind keeps a film's lesion ids apart.
    lesion_id = rows["image_id"] + "_" + rows["kind"].map(LESION_ID_KIND) + "_" + rows["abnormality_id"]
    les = pd.DataFrame({
        "image_id": rows["image_id"], "lesion_id": lesion_id, "kind": rows["kind"],
        "severity": rows["pathology"].map(lambda p: "M" if PATHOLOGY_MALIGNANT[p] else "B"), "shape": "mask",
        **{c: np.nan for c in ("cx", "cy", "r", "x0", "y0", "x1", "y1")},
        "mask_path": [resolver.mask(c, m) for c, m in zip(rows["crop_path"], rows["mask_path"], strict=True)],
    })
    dup = les["lesion_id"].duplicated(keep=False)
    if dup.any():
        where = ", ".join(f"{f} row {r}" for f, r in zip(rows.loc[dup, "file"][:5], rows.loc[dup, "row"][:5],
                                                         strict=True))
        raise DataError(f"CBIS-DDSM: duplicate abnormality ids {les.loc[dup, 'lesion_id'].tolist()[:5]} in "
                        f"{where}; each finding of a series needs its own abnormality id.")
    # Sorted by film so that the findings of both series of a film sit together.
    return les[manifest.LESION_COLUMNS].sort_values(["image_id", "lesion_id"]).reset_index(drop=True)


def build_manifest(root: Path, cfg: Config) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build ``(images, lesions)`` from the CSVs in ``root``, resolving files of a download when present.

    One image row per film (``<patient_id>_<side>_<view>``), merging a film's Mass and Calc series; one lesion
    row per CSV row.

    Raises:
        DataError: a CSV is missing or has an unknown value, or a row's series is not its own film.
    """
    root = Path(root)
    rows = read_descriptions(root)
    _check_series(rows)
    rows = rows.assign(image_id=film_ids(rows))
    resolver = _Resolver(root)
    images = _images(rows, resolver)
    both = set(rows.loc[rows["official_split"] == "train", "patient_id"]) & set(
        rows.loc[rows["official_split"] == "test", "patient_id"])
    if both:
        log.info("cbis-ddsm: %d patients are in both official files; all their films go to test", len(both))
    images = assign_splits(
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
