"""mini-MIAS manifest: counts, coordinates, patients, committed files, clear errors."""

from __future__ import annotations

import filecmp
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare import manifest
from mammo_utils.prepare.sources import mias

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


# Centres of nine masses read by eye from the films themselves (grid overlays and crops of the 1024 x 1024 PGMs),
# in pixels with the origin at the TOP-left, as the manifest stores them. Each is at least 395 px from the row
# Info.txt's y would give without the flip (its bottom-left origin read as top-left), so a lost or doubled flip
# misses every one by far more than the tolerance; each is within 23 px of the manifest's centre.
HAND_CHECKED_MASSES = {
    "mdb015": [(609, 152)],  # bright round mass high in the breast, under the pectoral edge
    "mdb021": [(495, 900)],  # dense lobulated mass at the bottom of the breast
    "mdb028": [(337, 699)],  # large bright malignant mass, lower left
    "mdb132": [(232, 245), (335, 257)],  # two: an oval mass and a small round one beside it
    "mdb134": [(470, 294)],  # bright ill-defined malignant mass, upper centre
    "mdb202": [(560, 250)],  # spiculated malignant mass, upper centre
    "mdb270": [(352, 92)],  # small round mass at the top edge of the breast
    "mdb271": [(800, 745)],  # ill-defined malignant mass at the chest-wall edge, lower right
}
TOLERANCE_PX = 30.0  # the eye's error on a blurred mass edge, well under the smallest radius here (18 px)


def _distances_to_hand_checked(lesions: pd.DataFrame, flip_back: bool = False) -> list[tuple[str, float]]:
    """For each hand-checked mass, the distance (px) to the nearest lesion centre of its image in ``lesions``."""
    out = []
    for image_id, points in HAND_CHECKED_MASSES.items():
        circles = lesions[(lesions["image_id"] == image_id) & (lesions["shape"] == "circle")]
        assert len(circles) == len(points), image_id
        cy = 1023 - circles["cy"] if flip_back else circles["cy"]
        for x, y in points:
            out.append((image_id, float(np.hypot(circles["cx"] - x, cy - y).min())))
    return out


def _assert_agrees_with_the_films(lesions: pd.DataFrame) -> None:
    far = [(i, round(d)) for i, d in _distances_to_hand_checked(lesions) if d > TOLERANCE_PX]
    assert not far, f"lesion centres away from the masses seen on the films (image, px): {far}"
    # The check is decisive: the same centres with y measured from the other edge miss every mass by far.
    assert min(d for _, d in _distances_to_hand_checked(lesions, flip_back=True)) > 10 * TOLERANCE_PX


def test_committed_lesion_centres_are_where_the_masses_are_on_the_films():
    _assert_agrees_with_the_films(pd.read_csv(REPO / "data_manifests" / "mias" / "lesions.csv"))


@needs_shared
def test_built_lesion_centres_are_where_the_masses_are_on_the_films(built):
    _, lesions = built
    _assert_agrees_with_the_films(lesions)


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
