"""CBIS-DDSM manifest: SOURCES.md counts, one row per film, labels, split, TCIA layouts, bad values."""

from __future__ import annotations

import filecmp
import os
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources import cbis_ddsm

REPO = Path(__file__).resolve().parents[1]
SOURCES = Path(os.environ.get("MAMMO_SOURCES_DIR") or REPO.parent / "shared" / "datasets")
SHARED = SOURCES / "cbis-ddsm"
COMMITTED = REPO / "data_manifests" / "cbis-ddsm"
needs_csvs = pytest.mark.skipif(not (SHARED / "metadata.csv").is_file(),
                                reason=f"no CBIS-DDSM CSVs at {SHARED}")
# One of the 16 films with a benign mass in its Mass series and a malignant calcification in its Calc series.
CONFLICTING_FILM = "P_00601_LEFT_CC"
CONFLICTING_KEY = ("P_00601", "L", "CC")  # its patient_id, laterality, view


def _raw_findings() -> pd.DataFrame:
    """The four CSVs read with pandas alone, not the module under test: one row per finding, with its film."""
    parts = []
    for name in ("mass_case_description_train_set.csv", "mass_case_description_test_set.csv",
                 "calc_case_description_train_set.csv", "calc_case_description_test_set.csv"):
        df = pd.read_csv(SHARED / name, dtype=str, keep_default_na=False)
        parts.append(pd.DataFrame({
            "patient_id": df["patient_id"].str.strip(),
            "laterality": df["left or right breast"].str.strip().str[0], "view": df["image view"].str.strip(),
            "pathology": df["pathology"].str.strip(), "series_kind": name.split("_")[0],
        }))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def committed() -> tuple[pd.DataFrame, pd.DataFrame]:
    return manifest.load_manifest(COMMITTED)


@pytest.fixture(scope="module")
def built():
    return cbis_ddsm.build_manifest(SHARED, Config())


@needs_csvs
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
    # 3,103 series are 3,032 films: 71 films are in both a Mass and a Calc series. Every finding is kept.
    assert len(images) == 3032 and len(lesions) == 3568 and images["patient_id"].nunique() == 1566
    # official test: 641 films with a Test series, plus the 35 training-only films of the 31 patients in both
    # files
    assert (images["split"] == "test").sum() == 676
    assert images.loc[images["split"] == "test", "patient_id"].nunique() == 349
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1


@needs_csvs
def test_labels(built):
    images, lesions = built
    assert (images["abnormal"] == 1).all()  # CBIS-DDSM has no normal images
    rows = cbis_ddsm.read_descriptions(SHARED)
    only_bwc = rows.groupby(cbis_ddsm.film_ids(rows))["pathology"].agg(set)
    bwc_ids = only_bwc[only_bwc.map(lambda s: s == {"BENIGN_WITHOUT_CALLBACK"})].index
    assert len(bwc_ids) and (images.set_index("image_id").loc[bwc_ids, "malignant"] == 0).all()
    assert set(images["density"]) == {"", "A", "B", "C", "D"}
    assert set(lesions["shape"]) == {"mask"} and set(lesions["severity"]) == {"B", "M"}


def test_committed_manifest_has_one_row_per_film(committed):
    images, _ = committed
    film = images[["patient_id", "laterality", "view"]]
    assert not film.duplicated().any(), images.loc[film.duplicated(keep=False), "image_id"].tolist()[:5]


@needs_csvs
def test_committed_malignant_matches_raw_findings(committed):
    images, _ = committed
    raw = _raw_findings()
    film = [raw["patient_id"], raw["laterality"], raw["view"]]
    malignant = (raw["pathology"] == "MALIGNANT").groupby(film).max()
    got = images.set_index(["patient_id", "laterality", "view"])["malignant"]
    assert set(got.index) == set(malignant.index)
    wrong = got[got != malignant.reindex(got.index).astype(int)]
    assert wrong.empty, f"{len(wrong)} films disagree with their findings, e.g. {wrong.index[:5].tolist()}"


@needs_csvs
def test_committed_conflicting_film_is_malignant_with_both_findings(committed):
    images, lesions = committed
    raw = _raw_findings()
    film = raw[raw[["patient_id", "laterality", "view"]].apply(tuple, axis=1) == CONFLICTING_KEY]
    # the premise: a benign-only Mass series and a malignant Calc series of the same film
    pathologies = film.groupby("series_kind")["pathology"].agg(set).to_dict()
    assert pathologies == {"mass": {"BENIGN"}, "calc": {"MALIGNANT"}}
    row = images.set_index("image_id").loc[CONFLICTING_FILM]
    assert tuple(row[["patient_id", "laterality", "view"]]) == CONFLICTING_KEY and row["malignant"] == 1
    les = lesions[lesions["image_id"] == CONFLICTING_FILM]
    assert sorted(zip(les["kind"], les["severity"], strict=True)) == [("calcification", "M"), ("mass", "B")]
    assert sorted(les["lesion_id"].str.split("_").str[-2]) == ["calc", "mass"]


@needs_csvs
def test_committed_manifest_is_reproducible(tmp_path):
    cbis_ddsm.write_manifest(tmp_path, SHARED)
    for name in ("images.csv", "lesions.csv"):
        assert filecmp.cmp(tmp_path / name, COMMITTED / name, shallow=False), name
    manifest.load_manifest(COMMITTED)


def _copy_csvs(dest: Path) -> None:
    for name in [*cbis_ddsm.FILES, "metadata.csv"]:
        shutil.copy(SHARED / name, dest / name)


@needs_csvs
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
    row = images.set_index("image_id").loc["P_00820_LEFT_CC"]
    assert row["path"] == folder.relative_to(tmp_path).as_posix() + "/1-1.dcm"
    assert row["width"] > 0 and row["height"] > 0
    # absent: the CSV's classic path; of a film in both series (Calc-Training too), the Mass series'
    other = images.set_index("image_id").loc["P_00016_LEFT_CC"]
    assert other["path"].startswith("Mass-Test_P_00016_LEFT_CC/") and other["path"].endswith("/000000.dcm")
    assert other["width"] == -1


@needs_csvs
def test_unknown_pathology_names_file_and_row(tmp_path):
    _copy_csvs(tmp_path)
    csv = tmp_path / "mass_case_description_test_set.csv"
    csv.write_bytes(csv.read_bytes().replace(b"MALIGNANT", b"MALIGNANTISH", 1))
    with pytest.raises(DataError, match=r"mass_case_description_test_set\.csv: unknown pathology in row \d+"):
        cbis_ddsm.build_manifest(tmp_path, Config())


@needs_csvs
def test_row_of_another_film_names_file_and_row(tmp_path):
    _copy_csvs(tmp_path)
    csv = tmp_path / "mass_case_description_test_set.csv"
    csv.write_bytes(csv.read_bytes().replace(b"\nP_00016,4,LEFT,CC,", b"\nP_00016,4,RIGHT,CC,", 1))
    message = r"mass_case_description_test_set\.csv row 1 \('Mass-Test_P_00016_LEFT_CC', expected"
    with pytest.raises(DataError, match=message):
        cbis_ddsm.build_manifest(tmp_path, Config())


def test_missing_csvs_are_named(tmp_path):
    with pytest.raises(DataError, match="mass_case_description_train_set.csv"):
        cbis_ddsm.locate(Config(data_dir=str(tmp_path), sources_dir=""))
