import pandas as pd
import pytest

from mammo_utils.errors import DataError
from mammo_utils.prepare.manifest import IMAGE_COLUMNS, load_manifest, save_manifest, validate
from mammo_utils.prepare.split import assign_splits, image_level_leakage, subsample_patients


def _images(n_patients=40, per_patient=4):
    rows = []
    for p in range(n_patients):
        kind = p % 4  # 0,1 normal; 2 benign; 3 malignant
        for k in range(per_patient):
            lesion = kind >= 2 and k < 2
            rows.append(dict(image_id=f"P{p}_{k}", patient_id=f"P{p}", dataset="t", path=f"{p}_{k}.png",
                             laterality="LR"[k % 2], view="CC", density="", abnormal=int(lesion),
                             malignant=int(lesion and kind == 3), birads="", source_label="", split="", fold="",
                             width=10, height=10))
    return pd.DataFrame(rows, columns=IMAGE_COLUMNS)


def test_split_is_by_patient_stratified_and_seeded():
    a = assign_splits(_images(), 0.15, 0.25, 5, seed=1)
    assert (a.groupby("patient_id")["split"].nunique() == 1).all()
    assert (a.groupby("patient_id")["fold"].nunique() == 1).all()
    for split in ("train", "val", "test"):
        part = a[a.split == split]
        assert part.malignant.sum() > 0 and (part.abnormal - part.malignant).sum() > 0
    assert sorted(a.groupby("fold")["patient_id"].nunique()) == [8] * 5
    assert a.equals(assign_splits(_images(), 0.15, 0.25, 5, seed=1))
    assert not a.split.equals(assign_splits(_images(), 0.15, 0.25, 5, seed=2).split)


def test_keep_official_test_split():
    imgs = _images()
    imgs.loc[imgs.patient_id.isin(["P0", "P1"]), "split"] = "test"
    out = assign_splits(imgs, 0.2, 0.0, 5, seed=0, keep_test=True)
    assert set(out.loc[out.split == "test", "patient_id"]) == {"P0", "P1"}


def test_patient_in_two_splits_is_an_error_naming_rows():
    imgs = assign_splits(_images(), seed=0)
    imgs.loc[imgs.image_id == "P3_0", "split"] = "test" if imgs.loc[imgs.image_id == "P3_1", "split"].item() != "test" else "train"
    with pytest.raises(DataError, match="P3_0"):
        validate(imgs)


@pytest.mark.parametrize("column, value, fragment", [
    ("abnormal", 2, "abnormal must be 0 or 1"), ("laterality", "X", "laterality"), ("split", "dev", "split"),
])
def test_bad_values_are_named(column, value, fragment):
    imgs = assign_splits(_images(), seed=0)
    imgs.loc[5, column] = value
    with pytest.raises(DataError, match=fragment):
        validate(imgs)


def test_duplicates_and_missing_files(tmp_path):
    imgs = assign_splits(_images(4, 2), seed=0)
    with pytest.raises(DataError, match="duplicate image_id"):
        validate(pd.concat([imgs, imgs.head(1)]))
    with pytest.raises(DataError, match="none of the 8 image files"):
        validate(imgs, root=tmp_path)
    (tmp_path / imgs.path.iloc[0]).write_bytes(b"x")
    with pytest.raises(DataError, match="7 image files are missing under"):
        validate(imgs, root=tmp_path)


def test_save_and_load_round_trip(tmp_path):
    imgs = assign_splits(_images(8, 2), seed=0)
    save_manifest(tmp_path, imgs, pd.DataFrame())
    back, lesions = load_manifest(tmp_path)
    assert back["image_id"].tolist() == imgs["image_id"].tolist()
    assert (back["fold"] == imgs["fold"].astype(int)).all() and lesions.empty


def test_label_fraction_keeps_whole_patients_of_every_stratum():
    imgs = _images(40)
    sub = subsample_patients(imgs, 0.25, seed=0)
    assert 9 <= sub.patient_id.nunique() <= 11  # a quarter of each stratum, rounded per stratum
    assert sub.groupby("patient_id").size().eq(4).all()
    assert sub.malignant.sum() > 0


def test_image_level_split_leaks_patients():
    leak = image_level_leakage(_images(40), 0.25, seed=0)
    assert leak["patients_in_both"] > 20
