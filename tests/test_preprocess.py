import numpy as np

from mammo_utils.prepare.preprocess import Transform, breast_mask, lesion_mask, preprocess_image
from mammo_utils.prepare.synthetic import generate_image


def _right_breast():
    return generate_image(np.random.default_rng(1), 160, "MLO", "R", "B", "circumscribed")


def test_marker_removed_chest_wall_left_and_square_output():
    img = _right_breast()
    out, t = preprocess_image(img.pixels, 64)
    assert out.shape == (64, 64) and out.dtype == np.float32
    assert t.flipped  # a right breast is turned so its chest wall is on the left
    assert out[:, :16].mean() > out[:, -16:].mean()
    mask = breast_mask(img.pixels)
    assert not mask[-10:, :20].any()  # the side marker (bottom-left for R) is not part of the breast


def test_lesion_centre_follows_the_image():
    img = _right_breast()
    (les,) = img.lesions
    out, t = preprocess_image(img.pixels, 64)
    small = t.apply(les.mask.astype(np.float32)) > 0.25
    (cx, cy), = t.to_output([[les.cx, les.cy]])
    assert small[int(round(cy)), int(round(cx))]


def test_point_mapping_round_trips_with_crop_and_flip():
    t = Transform(orig_width=300, orig_height=200, crop_x0=40, crop_y0=10, crop_x1=240, crop_y1=190, flipped=True,
                  scale=0.32, out_size=64)
    pts = np.array([[40.0, 10.0], [100.5, 50.25], [239.0, 189.0]])
    np.testing.assert_allclose(t.to_original(t.to_output(pts)), pts, atol=1e-9)
    assert Transform.from_dict(t.to_dict()) == t


def test_map_back_to_original_grid_lands_on_the_lesion():
    img = _right_breast()
    (les,) = img.lesions
    _, t = preprocess_image(img.pixels, 64)
    small = t.apply(les.mask.astype(np.float32))
    back = t.to_original_image(small)
    assert back.shape == img.pixels.shape
    y, x = np.unravel_index(np.argmax(back), back.shape)
    assert np.hypot(x - les.cx, y - les.cy) <= les.r * 1.5


def test_lesion_mask_shapes():
    m = lesion_mask([{"shape": "circle", "cx": 10, "cy": 5, "r": 2}, {"shape": "box", "x0": 0, "y0": 0, "x1": 1,
                     "y1": 1}, {"shape": "none"}], 20, 10)
    assert m[5, 10] and m[0, 0] and m[1, 1] and not m[9, 19]
    assert m.sum() == 13 + 4


# The 47 MIAS films whose chest wall the earlier rule ("the half holding more tissue") put on the wrong side.
HALF_RULE_MISSED = {f"mdb{n:03d}" for n in (
    41, 47, 75, 79, 115, 116, 117, 118, 151, 152, 169, 178, 179, 180, 181, 185, 186, 191, 192, 207, 208, 211, 212,
    213, 214, 220, 221, 233, 241, 246, 249, 250, 252, 255, 263, 264, 267, 268, 291, 292, 297, 298, 302, 305, 306,
    308, 320)}


def test_chest_wall_side_agrees_with_laterality_on_real_mias(tmp_path):
    """MIAS shows right breasts with the chest wall on the right of the film: the rule must find that side on
    the films the earlier rule missed and on a sample of the others."""
    import tarfile

    import pandas as pd
    import pytest

    from mammo_utils.prepare.io import read_image
    from mammo_utils.prepare.preprocess import breast_mask, chest_wall_on_right

    from .conftest import REPO, sources_dir

    archive = (sources_dir() or tmp_path) / "mias" / "all-mias.tar.gz"
    if not archive.exists():
        pytest.skip("mini-MIAS archive not available (set MAMMO_SOURCES_DIR)")
    laterality = pd.read_csv(REPO / "data_manifests" / "mias" / "images.csv").set_index("image_id")["laterality"]
    wrong = []
    with tarfile.open(archive) as tar:
        for member in tar:
            name = member.name.rsplit("/", 1)[-1]
            if not name.endswith(".pgm") or not (name[:-4] in HALF_RULE_MISSED or int(name[3:6]) % 8 == 0):
                continue
            path = tmp_path / name
            path.write_bytes(tar.extractfile(member).read())
            if chest_wall_on_right(breast_mask(read_image(path).pixels)) != (laterality[name[:-4]] == "R"):
                wrong.append(name[:-4])
            path.unlink()
    # Films that fill the whole frame stay ambiguous: 3 of the 47 (mdb075, mdb151, mdb152) are still missed.
    assert len(laterality) == 322 and len(wrong) <= 4, wrong
