"""mini-MIAS manifest: counts, coordinates, patients, committed files, clear errors."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import pytest

from mammo_utils import manifest
from mammo_utils.config import Config
from mammo_utils.datasets import mias
from mammo_utils.errors import DataError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MAMMO_SOURCES_DIR") or REPO.parent / "shared" / "datasets") / "mias"
needs_shared = pytest.mark.skipif(not (SHARED / "Info.txt").is_file(), reason=f"no shared MIAS copy at {SHARED}")


@pytest.fixture(scope="module")
def built():
    return mias.build_manifest(SHARED, Config())


@needs_shared
def test_counts_by_image(built):
    images, lesions = built
    assert len(images) == 322 and images["patient_id"].nunique() == 161
    normal = (images["abnormal"] == 0).sum()
    malignant = images["malignant"].sum()
    benign = ((images["abnormal"] == 1) & (images["malignant"] == 0)).sum()
    assert (normal, benign, malignant) == (207, 63, 52)
    assert len(lesions) == 330 - 207
    assert set(lesions.loc[lesions["shape"] == "none", "image_id"]) == {"mdb059", "mdb216", "mdb233", "mdb245"}
    assert images.set_index("image_id").loc["mdb144", "malignant"] == 1  # one B and one M finding


@needs_shared
def test_y_is_flipped_to_top_left_origin(built):
    _, lesions = built
    info = mias.parse_info(SHARED / "Info.txt").dropna(subset=["y"])
    circles = lesions[lesions["shape"] == "circle"]
    assert len(circles) == len(info) == 119
    for (_, f), (_, les) in zip(info.iterrows(), circles.iterrows(), strict=True):
        assert les["image_id"] == f["refnum"]
        assert les["cy"] == 1023 - f["y"] and les["cx"] == f["x"] and les["r"] == f["r"]
    first = circles.iloc[0]
    assert (first["cx"], first["cy"]) == (535, 598)  # mdb001: x 535, y 425 from the bottom


@needs_shared
def test_pairs_are_one_woman_and_laterality_alternates(built):
    images, _ = built
    by_id = images.set_index("image_id")
    assert by_id.loc["mdb001", "patient_id"] == by_id.loc["mdb002", "patient_id"] != by_id.loc["mdb003", "patient_id"]
    assert (by_id.loc["mdb001", "laterality"], by_id.loc["mdb002", "laterality"]) == ("R", "L")
    assert set(images["view"]) == {"MLO"}
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1
    assert set(images["split"]) == {"train", "val", "test"} and set(images["fold"]) == set(range(5))


@needs_shared
def test_committed_manifest_is_reproducible(tmp_path):
    mias.write_manifest(tmp_path, SHARED)
    for name in ("images.csv", "lesions.csv"):
        assert filecmp.cmp(tmp_path / name, REPO / "data_manifests" / "mias" / name, shallow=False), name
    manifest.load_manifest(REPO / "data_manifests" / "mias")
    assert (REPO / "data_manifests/mias/SHA256SUMS").read_bytes() == (SHARED / "SHA256SUMS").read_bytes()


def test_unknown_class_names_the_line(tmp_path):
    (tmp_path / "Info.txt").write_text("header\r\nmdb001 G CIRC B 535 425 197\r\nmdb002 G BLOB B 1 2 3\r\n")
    with pytest.raises(DataError, match=r"line 3.*BLOB"):
        mias.parse_info(tmp_path / "Info.txt")


def test_empty_dataset_folder_is_a_clear_error(tmp_path):
    (tmp_path / "mias").mkdir()
    cfg = Config(data_dir=str(tmp_path), sources_dir="")
    with pytest.raises(DataError, match=r"Info\.txt.*prepare --dataset mias --from"):
        mias.locate(cfg)
