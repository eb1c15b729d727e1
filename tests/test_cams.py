"""CAMs on a random-init one-channel ResNet-50: maps, the feature grid, coordinates, the randomisation check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.errors import ConfigError
from mammo_utils.gradcam import cams
from mammo_utils.models import Classifier
from mammo_utils.prepare.preprocess import Transform

SIZE = 64


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    return Classifier().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 1, SIZE, SIZE)


@pytest.mark.parametrize("method", list(cams.CAM_METHODS))
def test_cams_are_maps_in_unit_range(model, images, method):
    maps = cams.compute_cams(model, images, method, batch_size=2, device="cpu")
    assert maps.shape == (3, SIZE, SIZE)
    assert np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() <= 1.0


def test_unknown_method_is_refused_naming_the_setting(model, images):
    with pytest.raises(ConfigError, match="gradcam.cams") as err:
        cams.compute_cams(model, images, "scorecam")
    assert all(name in str(err.value) for name in cams.CAM_METHODS)
    with pytest.raises(ConfigError, match="empty"):
        cams.check_methods(())
    assert cams.check_methods(["eigencam", "gradcam", "eigencam"]) == ("eigencam", "gradcam")


@pytest.mark.parametrize(("size_px", "grid"), [(128, (4, 4)), (64, (2, 2))])
def test_cam_grid_size_is_the_layer4_grid(size_px, grid):
    torch.manual_seed(0)
    net = Classifier().train()
    before = net.backbone.layer4[-1].bn3.running_mean.clone()
    assert cams.cam_grid_size(net, size_px) == grid
    assert net.training  # the probe leaves the mode as it found it ...
    assert torch.equal(net.backbone.layer4[-1].bn3.running_mean, before)  # ... and the statistics untouched


# A tall original: crop box inside it, mirrored, downscaled (the longer side 90 px -> 64 px).
TRANSFORM = Transform(orig_width=120, orig_height=100, crop_x0=10, crop_y0=5, crop_x1=90, crop_y1=95,
                      flipped=True, scale=SIZE / 90, out_size=SIZE)


def test_transform_points_round_trip():
    rng = np.random.default_rng(0)
    pts = rng.uniform([10, 5], [90, 95], size=(50, 2))
    back = TRANSFORM.to_original(TRANSFORM.to_output(pts))
    np.testing.assert_allclose(back, pts, atol=1e-9)


def test_cam_peak_maps_back_to_the_lesion():
    lesion_xy = np.array([[70.0, 30.0]])  # original pixels, near the crop's right edge before the flip
    col, row = np.round(TRANSFORM.to_output(lesion_xy)[0]).astype(int)
    assert col < SIZE // 2  # the flip moved it to the left half of the network input
    cam = np.zeros((SIZE, SIZE), dtype=np.float32)
    cam[row, col] = 1.0
    assert cams.cam_peak(cam) == (col, row)
    back = cams.cam_to_original(cam, TRANSFORM)
    assert back.shape == (100, 120)
    peak_row, peak_col = np.unravel_index(int(np.argmax(back)), back.shape)
    tolerance = 1.0 / TRANSFORM.scale + 1.0  # one output pixel covers 1/scale original pixels
    assert abs(peak_col - 70) <= tolerance and abs(peak_row - 30) <= tolerance
    np.testing.assert_allclose(cams.peak_to_original(cam, TRANSFORM), [70, 30], atol=tolerance)
    assert back[:, :10].max() == 0 and back[:5].max() == 0  # nothing outside the crop box


def test_a_flat_map_has_no_peak():
    assert cams.cam_peak(np.zeros((8, 8))) is None
    assert cams.cam_peak(np.full((8, 8), 0.3)) is None


def test_randomization_changes_grad_cam(model, images):
    check = cams.randomization_check(model, images, "gradcam", seed=0, batch_size=2)
    assert check.trained.shape == check.randomized.shape == (3, SIZE, SIZE)
    assert np.isfinite(check.spearman).all()
    assert ((check.spearman >= -1.0) & (check.spearman <= 1.0)).all()
    # The trivial case: a map against itself correlates perfectly. A copy that was not re-initialised would
    # give exactly that; the re-initialised one must not.
    np.testing.assert_allclose(cams.spearman_per_image(check.trained, check.trained), 1.0)
    assert (check.spearman < 0.99).all()
    assert np.abs(check.trained - check.randomized).max() > 0.1


def test_randomization_leaves_the_model_and_is_seeded(images):
    torch.manual_seed(2)
    model = Classifier().eval()  # its own: a shared model changed by another test would hide a change here
    state = {k: v.clone() for k, v in model.state_dict().items()}
    check = cams.randomization_check(model, images[:1], "gradcam", seed=0)
    np.testing.assert_array_equal(check.trained, cams.compute_cams(model, images[:1], "gradcam"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    a, b, c = (cams.randomize_top(model, seed).state_dict() for seed in (0, 0, 1))
    top = [k for k in a if k.startswith(("backbone.layer4.", "head."))]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    assert not torch.equal(a["head.1.weight"], c["head.1.weight"])  # another seed, others
    assert not any(torch.equal(a[k], state[k]) for k in top if k.endswith("conv1.weight"))
    below = [k for k in a if k not in top]
    assert all(torch.equal(a[k], state[k]) for k in below)  # only the top is re-initialised


def test_spearman_of_a_flat_map_is_undefined():
    flat, ramp = np.zeros((1, 4, 4)), np.arange(16.0).reshape(1, 4, 4)
    assert np.isnan(cams.spearman_per_image(flat, ramp)).all()
    np.testing.assert_allclose(cams.spearman_per_image(ramp, -ramp), -1.0)
