import numpy as np

from mammo_utils.preprocess import Transform, breast_mask, lesion_mask, preprocess_image
from mammo_utils.synthetic_images import generate_image


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
