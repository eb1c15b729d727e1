"""VinDr-Mammo manifest on small CSVs written here with the real column names (SOURCES-restricted.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mammo_utils.config import Config
from mammo_utils.errors import DataError
from mammo_utils.prepare.sources import vindr

BREAST = "study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,split"
FINDING = ("study_id,series_id,image_id,laterality,view_position,height,width,breast_birads,breast_density,"
           "finding_categories,finding_birads,xmin,ymin,xmax,ymax,split")


def write_vindr(root: Path, split_value: str = "test") -> Path:
    breast, finding = [BREAST], [FINDING]
    studies = [("s1", "training", "BI-RADS 1"), ("s2", "training", "BI-RADS 3"), ("s3", "training", "BI-RADS 4"),
               ("s4", "training", "BI-RADS 1"), ("s5", split_value, "BI-RADS 5"), ("s6", "test", "BI-RADS 2")]
    for study, split, birads in studies:
        for lat in "LR":
            for view in ("CC", "MLO"):
                img = f"{study}{lat}{view}"
                b = birads if lat == "L" else "BI-RADS 1"
                breast.append(f"{study},se{study},{img},{lat},{view},3518,2800,{b},DENSITY C,{split}")
                if b == "BI-RADS 1":
                    finding.append(f"{study},se{study},{img},{lat},{view},3518,2800,{b},DENSITY C,"
                                   f"['No Finding'],,,,,,{split}")
                else:
                    finding.append(f"{study},se{study},{img},{lat},{view},3518,2800,{b},DENSITY C,"
                                   f"\"['Mass', 'Suspicious Calcification']\",{b},-5.2,100,300.5,4000,{split}")
    (root / "breast-level_annotations.csv").write_text("\n".join(breast) + "\n")
    (root / "finding_annotations.csv").write_text("\n".join(finding) + "\n")
    return root


def test_split_labels_and_boxes(tmp_path):
    images, lesions = vindr.build_manifest(write_vindr(tmp_path), Config())
    by_id = images.set_index("image_id")
    assert len(images) == 24 and images["patient_id"].nunique() == 6
    assert set(images.loc[images["patient_id"].isin(["s5", "s6"]), "split"]) == {"test"}
    assert set(images.loc[~images["patient_id"].isin(["s5", "s6"]), "split"]) <= {"train", "val"}
    assert by_id.loc["s1LCC", ["abnormal", "malignant"]].tolist() == [0, 0]
    assert by_id.loc["s2LCC", ["abnormal", "malignant"]].tolist() == [1, 0]
    assert by_id.loc["s3LCC", ["abnormal", "malignant", "birads", "density"]].tolist() == [1, 1, "4", "C"]
    assert by_id.loc["s1LCC", "path"] == "images/s1/s1LCC.dicom"
    assert len(lesions) == 8 and set(lesions["kind"]) == {"mass"}
    first = lesions.iloc[0]
    assert (first["x0"], first["y0"], first["x1"], first["y1"]) == (0, 100, 300.5, 3517)  # clipped
    assert set(lesions.loc[lesions["image_id"].str.startswith("s2"), "severity"]) == {"B"}
    assert images.groupby("patient_id")[["split", "fold"]].nunique().max().max() == 1


def test_unknown_split_names_the_line(tmp_path):
    with pytest.raises(DataError, match=r"unknown split in line 18 \('validation'\)"):
        vindr.build_manifest(write_vindr(tmp_path, split_value="validation"), Config())


def test_missing_csv_is_named(tmp_path):
    with pytest.raises(DataError, match="breast-level_annotations.csv"):
        vindr.locate(Config(data_dir=str(tmp_path), sources_dir=""))
