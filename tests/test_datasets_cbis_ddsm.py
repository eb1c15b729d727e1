"""CBIS-DDSM manifest: counts against SOURCES.md, labels, official split, TCIA layouts, bad values."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import pytest

from mammo_utils import manifest
from mammo_utils.config import Config
from mammo_utils.datasets import cbis_ddsm
from mammo_utils.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SOURCES = Path(os.environ.get("MAMMO_SOURCES_DIR") or REPO.parent / "shared" / "datasets")
SHARED = SOURCES / "cbis-ddsm"
pytestmark = pytest.mark.skipif(not (SHARED / "metadata.csv").is_file(), reason=f"no CBIS-DDSM CSVs at {SHARED}")


@pytest.fixture(scope="module")
def built():
    return cbis_ddsm.build_manifest(SHARED, Config())


def test_counts_match_sources(built):
    rows = cbis_ddsm.read_descriptions(SHARED)
    expected = {  # SOURCES.md: rows, patients, distinct full images
        "mass_case_description_train_set.csv": (1318, 691, 1231),
        "mass_case_description_test_set.csv": (378, 201, 361),
        "calc_case_description_train_set.csv": (1546, 602, 1227),
        "calc_case_description_test_set.csv": (326, 151, 284),
    }
    for name, (n_rows, n_patients, n_images) in expected.items():
        g = rows[rows["file"] == name]
        assert (len(g), g["patient_id"].nunique(), g["image_path"].str.split("/").str[0].nunique()) == (
            n_rows, n_patients, n_images), name
    images, lesions = built
    assert len(images) == 3103 and len(lesions) == 3568 and images["patient_id"].nunique() == 1566
    # official test: 361 + 284 images, plus the training images of the 31 patients in both files
    assert (images["split"] == "test").sum() == 709
    assert images.loc[images["split"] == "test", "patient_id"].nunique() == 349
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1


def test_labels(built):
    images, lesions = built
    assert (images["abnormal"] == 1).all()  # CBIS-DDSM has no normal images
    rows = cbis_ddsm.read_descriptions(SHARED)
    only_bwc = rows.groupby(rows["image_path"].str.split("/").str[0])["pathology"].agg(set)
    bwc_ids = only_bwc[only_bwc.map(lambda s: s == {"BENIGN_WITHOUT_CALLBACK"})].index
    assert len(bwc_ids) and (images.set_index("image_id").loc[bwc_ids, "malignant"] == 0).all()
    assert set(images["density"]) == {"", "A", "B", "C", "D"}
    assert set(lesions["shape"]) == {"mask"} and set(lesions["severity"]) == {"B", "M"}


def test_committed_manifest_is_reproducible(tmp_path):
    cbis_ddsm.write_manifest(tmp_path, SHARED)
    for name in ("images.csv", "lesions.csv"):
        assert filecmp.cmp(tmp_path / name, REPO / "data_manifests" / "cbis-ddsm" / name, shallow=False), name
    manifest.load_manifest(REPO / "data_manifests" / "cbis-ddsm")


def _copy_csvs(dest: Path) -> None:
    for name in [*cbis_ddsm.FILES, "metadata.csv"]:
        shutil.copy(SHARED / name, dest / name)


def test_descriptive_nbia_layout_is_resolved(tmp_path):
    sample = SOURCES / "dicom-samples" / "MG_CBIS-DDSM_Mass-Test_P_00820_LEFT_CC_full_RLE.dcm"
    if not sample.is_file():
        pytest.skip("no CBIS-DDSM DICOM sample")
    _copy_csvs(tmp_path)
    folder = tmp_path / ("CBIS-DDSM/Mass-Test_P_00820_LEFT_CC/10-04-2016-DDSM-NA-84891/"
                         "1.000000-full mammogram images-12693")
    folder.mkdir(parents=True)
    shutil.copy(sample, folder / "1-1.dcm")
    images, _ = cbis_ddsm.build_manifest(tmp_path, Config())
    row = images.set_index("image_id").loc["Mass-Test_P_00820_LEFT_CC"]
    assert row["path"] == folder.relative_to(tmp_path).as_posix() + "/1-1.dcm"
    assert row["width"] > 0 and row["height"] > 0
    other = images.set_index("image_id").loc["Mass-Test_P_00016_LEFT_CC"]
    assert other["path"].endswith("/000000.dcm") and other["width"] == -1  # absent: the CSV's classic path


def test_unknown_pathology_names_file_and_row(tmp_path):
    _copy_csvs(tmp_path)
    csv = tmp_path / "mass_case_description_test_set.csv"
    csv.write_bytes(csv.read_bytes().replace(b"MALIGNANT", b"MALIGNANTISH", 1))
    with pytest.raises(DataError, match=r"mass_case_description_test_set\.csv: unknown pathology in row \d+"):
        cbis_ddsm.build_manifest(tmp_path, Config())


def test_missing_csvs_are_named(tmp_path):
    with pytest.raises(DataError, match="mass_case_description_train_set.csv"):
        cbis_ddsm.locate(Config(data_dir=str(tmp_path), sources_dir=""))
