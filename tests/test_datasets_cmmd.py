"""CMMD manifest: the real clinical table and TCIA metadata.csv, plus DICOM laterality on tiny files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pandas as pd
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare.sources import cmmd

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAMMO_SOURCES_DIR") or REPO.parent / "shared" / "datasets") / "cmmd"
pytestmark = pytest.mark.skipif(not (SHARED / "metadata.csv").is_file(), reason=f"no CMMD tables at {SHARED}")


def test_counts_from_the_tables():
    images, lesions = cmmd.build_manifest(SHARED, Config())
    # SOURCES.md: 1,872 breast rows (Malignant 1,316, Benign 556), 1,775 patients, 2 images per breast
    assert len(images) == 2 * 1872 and images["patient_id"].nunique() == 1775
    assert images["malignant"].sum() == 2 * 1316 and (images["abnormal"] == 1).all()
    assert (images["laterality"] == "L").sum() == 2 * 988 and lesions.empty
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1


def write_dicom(path: Path, laterality: str, view: str) -> None:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.ImageLaterality, ds.ViewPosition, ds.Rows, ds.Columns = laterality, view, 64, 48
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)


def test_dicom_laterality_and_unlabelled_breasts(tmp_path):
    clinical = pd.read_csv(SHARED / "CMMD_clinicaldata_revision.csv", dtype=str, keep_default_na=False)
    two = clinical[clinical["ID1"].duplicated(keep=False)]["ID1"].iloc[0]
    clinical[clinical["ID1"].isin(["D1-0001", two])].to_csv(tmp_path / cmmd.CLINICAL_CSV, index=False)
    shutil.copy(SHARED / "metadata.csv", tmp_path / "metadata.csv")
    folders = cmmd._series_folders(tmp_path)
    one = tmp_path / folders["D1-0001"]  # D1-0001: right breast labelled; its left breast is not
    for n, (lat, view) in enumerate([("R", "CC"), ("R", "MLO"), ("L", "CC"), ("L", "MLO")], 1):
        write_dicom(one / f"1-{n}.dcm", lat, view)
    for n, (lat, view) in enumerate([("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")], 1):
        write_dicom(tmp_path / folders[two] / f"1-{n}.dcm", lat, view)
    images, _ = cmmd.build_manifest(tmp_path, Config())
    mine = images[images["patient_id"] == "D1-0001"]
    assert sorted(mine["laterality"] + mine["view"]) == ["RCC", "RMLO"]
    assert (mine["width"] == 48).all() and mine["path"].str.endswith(".dcm").all()
    assert len(images[images["patient_id"] == two]) == 4


def test_unknown_classification_names_the_line(tmp_path):
    (tmp_path / cmmd.CLINICAL_CSV).write_text(
        "ID1,LeftRight,Age,number,abnormality,classification,subtype\n"
        "D1-0001,R,44,2,calcification,Benign,\nD1-0002,L,40,2,mass,Maybe,\n")
    with pytest.raises(DataError, match=r"unknown classification in line 3 \('Maybe'\)"):
        cmmd.build_manifest(tmp_path, Config())
