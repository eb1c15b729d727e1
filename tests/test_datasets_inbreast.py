"""INbreast manifest on small files written here with the real column names (SOURCES-restricted.md)."""

from __future__ import annotations

import plistlib
from pathlib import Path

import pytest

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare.sources import inbreast

HEADER = "Patient ID;Patient age;Laterality;View;Acquisition date;File Name;ACR;Bi-Rads"
# (file name, woman's hash, laterality, view, ACR, BI-RADS)
ROWS = [
    ("22678622", "61b13c59bcba149e", "R", "CC", "4", "1"),
    ("22678646", "61b13c59bcba149e", "R", "MLO", "4", "1"),
    ("22678694", "61b13c59bcba149e", "L", "CC", "4", "2"),
    ("20586908", "6c613a14b80a8591", "R", "CC", "   ", "4c"),
    ("20586934", "6c613a14b80a8591", "R", "FB", "2", "5"),
    ("20588046", "24065251ed9a9a4b", "L", "CC", "1", "3"),
    ("20588072", "24065251ed9a9a4b", "L", "MLO", "1", "6"),
    ("53586388", "1e1fbf0e2d6c5c8d", "R", "CC", "3", "4a"),
]


def write_inbreast(root: Path, rows=ROWS) -> Path:
    lines = [HEADER] + [f"removed;removed;{lat};{view};200{i % 10}01;{name};{acr};{br}"
                        for i, (name, _, lat, view, acr, br) in enumerate(rows)]
    (root / "INbreast.csv").write_text("\n".join(lines) + "\n")
    (root / "AllDICOMs").mkdir()
    for name, woman, lat, view, *_ in rows:
        (root / "AllDICOMs" / f"{name}_{woman}_MG_{lat}_{view[:2]}_ANON.dcm").write_bytes(b"")
    (root / "AllXML").mkdir()
    roi = {"Name": "Mass", "NumberOfPoints": 3, "Point_px": ["(10.5, 20)", "(-2, 40.25)", "(30, 25)"]}
    cluster = {"Name": "Cluster", "NumberOfPoints": 2, "Point_px": ["(100, 100)", "(120, 130)"]}
    with open(root / "AllXML" / "20586908.xml", "wb") as fh:
        plistlib.dump({"Images": [{"ImageIndex": 0, "NumberOfROIs": 2, "ROIs": [roi, cluster]}]}, fh)
    return root


def test_labels_patients_and_contours(tmp_path):
    images, lesions = inbreast.build_manifest(write_inbreast(tmp_path), Config())
    by_id = images.set_index("image_id")
    assert images["patient_id"].nunique() == 4
    assert by_id.loc["22678622", ["abnormal", "malignant"]].tolist() == [0, 0]  # BI-RADS 1
    assert by_id.loc["22678694", ["abnormal", "malignant"]].tolist() == [1, 0]  # 2
    assert by_id.loc["20588046", ["abnormal", "malignant"]].tolist() == [1, 0]  # 3
    assert by_id.loc["53586388", ["abnormal", "malignant"]].tolist() == [1, 1]  # 4a
    assert by_id.loc["20586908", "density"] == "" and by_id.loc["22678622", "density"] == "D"
    assert by_id.loc["20586934", "view"] == "FB"
    assert by_id.loc["22678622", "path"].startswith("AllDICOMs/22678622_")
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1
    assert lesions["kind"].tolist() == ["mass", "calcification"]
    assert lesions.iloc[0][["x0", "y0", "x1", "y1"]].tolist() == [0, 20, 30, 40.25]


def test_unknown_birads_names_the_line(tmp_path):
    rows = ROWS[:3] + [("20588046", "24065251ed9a9a4b", "L", "CC", "1", "7")]
    with pytest.raises(DataError, match=r"line 5: unknown Bi-Rads '7'"):
        inbreast.build_manifest(write_inbreast(tmp_path, rows), Config())


def test_dicoms_are_needed_for_patients(tmp_path):
    (tmp_path / "INbreast.csv").write_text(HEADER + "\n")
    with pytest.raises(DataError, match="group images by woman"):
        inbreast.build_manifest(tmp_path, Config())
