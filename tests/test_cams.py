"""CAMs on a random-init one-channel ResNet-50: maps, the feature grid, coordinates, the randomisation check."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.errors import ConfigError
from mammo_utils.gradcam import cams
from mammo_utils.models import Classifier, make_backbone
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
    assert cams.cam_peak(np.zeros((2, 2)), (SIZE, SIZE)) is None
    assert cams.peak_to_original(np.zeros((2, 2)), TRANSFORM) is None


def test_a_grid_map_points_at_the_centre_of_its_hottest_cell():
    grid = np.array([[0.1, 0.9], [0.3, 0.2]])
    assert cams.cam_peak(grid) == (1, 0)  # on its own grid: (column, row)
    assert cams.cam_peak(grid, (SIZE, SIZE)) == (3 * SIZE // 4, SIZE // 4)  # on the image: the cell's centre
    assert cams.cam_peak(np.arange(12.0).reshape(3, 4), (90, 120)) == (105, 75)  # cells of 30 x 30 px
    np.testing.assert_allclose(cams.peak_to_original(grid, TRANSFORM),
                               TRANSFORM.to_original(np.array([[3 * SIZE / 4, SIZE / 4]]))[0])


@pytest.mark.parametrize(("arch", "blocks"), [("resnet18", (1, 0)), ("resnet50", (2, 1, 0))])
def test_the_cascade_starts_at_the_head(arch, blocks):
    """Adebayo et al.'s cascade re-initialises from the output down: the head alone first, then the blocks of
    layer4 from the last (as many as the backbone has), each step keeping the layers already randomised."""
    torch.manual_seed(3)
    model = Classifier(make_backbone(arch)).eval()
    cascade = cams.randomization_cascade(model)
    assert cascade == ("head", *(f"backbone.layer4.{i}" for i in blocks))
    state = model.state_dict()
    previous = None
    for k in range(len(cascade)):
        done = cascade[: k + 1]
        step = cams.randomize_layers(model, done, seed=0).state_dict()
        changed = {key for key in state if not torch.equal(state[key], step[key])}
        assert changed and all(key.startswith(done) for key in changed)  # only the layers of this step and above
        assert any(key.startswith(done[-1]) for key in changed)
        if previous is not None:  # the layers randomised at earlier steps keep their random weights
            assert all(torch.equal(previous[key], step[key]) for key in previous if key.startswith(done[:-1]))
        previous = step


def test_randomising_does_not_redraw_the_weights_the_model_started_from():
    """A classifier built after seeding with s starts from the weights a plain re-initialisation seeded with s would
    draw; the randomisation must not give them back (a barely trained head would then survive its own
    'randomisation')."""
    torch.manual_seed(0)
    backbone = make_backbone("resnet18")
    torch.manual_seed(7)
    model = Classifier(backbone).eval()  # its head is drawn right after seeding with 7, as a stage does
    start = model.head[1].weight.detach().clone()
    new = cams.randomize_layers(model, ("head",), seed=7).head[1].weight.detach()
    cos = torch.nn.functional.cosine_similarity(start.flatten(), new.flatten(), dim=0)
    assert abs(cos) < 0.3, cos


def test_randomising_the_head_alone_changes_grad_cam_but_not_eigencam(images):
    """Grad-CAM on the last block with global pooling and one linear logit is CAM (Zhou et al. 2016): the map is
    the head's weights applied to each cell's features, so a new head makes a new map. EigenCAM never reads the
    head: the first step of the cascade leaves it exactly as it was."""
    torch.manual_seed(4)
    model = Classifier().eval()
    grad_cam = cams.randomization_check(model, images, "gradcam", seed=1, batch_size=3, layers=("head",))
    assert grad_cam.layers == ("head",) and grad_cam.randomized.shape == (1, 3, SIZE, SIZE)
    assert np.abs(grad_cam.trained - grad_cam.randomized[0]).max() > 0.1
    eigen = cams.randomization_check(model, images, "eigencam", seed=1, batch_size=3, layers=("head",))
    np.testing.assert_allclose(eigen.randomized[0], eigen.trained, atol=1e-6)


def test_grad_cam_weights_are_the_head_weights_over_the_grid():
    """The equation behind the previous test: every gradient of the logit with respect to a cell of feature
    map k is w_k / (h w)."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    torch.manual_seed(5)
    model = Classifier().eval()
    with GradCAM(model=model, target_layers=[cams.target_layer(model)]) as grad_cam:
        grad_cam(input_tensor=torch.rand(1, 1, SIZE, SIZE), targets=[ClassifierOutputTarget(0)])
        gradients = grad_cam.activations_and_grads.gradients[0][0]
    h, w = gradients.shape[1:]
    expected = (model.head[1].weight[0] / (h * w)).detach()[:, None, None].expand_as(gradients)
    torch.testing.assert_close(gradients, expected)


def test_randomization_cascade_changes_grad_cam(model, images):
    check = cams.randomization_check(model, images, "gradcam", seed=0, batch_size=2)
    n = len(cams.randomization_cascade(model))
    assert check.trained.shape == (3, SIZE, SIZE) and check.randomized.shape == (n, 3, SIZE, SIZE)
    assert check.spearman.shape == (n, 3) and check.layers == cams.randomization_cascade(model)
    finite = check.spearman[np.isfinite(check.spearman)]
    assert finite.size and ((finite >= -1.0) & (finite <= 1.0)).all()
    # The trivial case: a map against itself correlates perfectly. A copy that was not re-initialised would
    # give exactly that at every step; the re-initialised ones must not.
    np.testing.assert_allclose(cams.spearman_per_image(check.trained, check.trained), 1.0)
    assert (np.nanmin(check.spearman, axis=1) < 0.9).all()
    assert all(np.abs(check.trained - maps).max() > 0.1 for maps in check.randomized)


def test_randomization_leaves_the_model_and_is_seeded(images):
    torch.manual_seed(2)
    model = Classifier().eval()  # its own: a shared model changed by another test would hide a change here
    state = {k: v.clone() for k, v in model.state_dict().items()}
    check = cams.randomization_check(model, images[:1], "gradcam", seed=0, layers=("head",))
    np.testing.assert_array_equal(check.trained, cams.compute_cams(model, images[:1], "gradcam"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())

    layers = cams.randomization_cascade(model)
    a, b, c = (cams.randomize_layers(model, layers, seed).state_dict() for seed in (0, 0, 1))
    top = [k for k in a if k.startswith(("backbone.layer4.", "head."))]
    assert all(torch.equal(a[k], b[k]) for k in a)  # same seed, same weights
    assert not torch.equal(a["head.1.weight"], c["head.1.weight"])  # another seed, others
    assert not any(torch.equal(a[k], state[k]) for k in top if k.endswith("conv1.weight"))
    below = [k for k in a if k not in top]
    assert all(torch.equal(a[k], state[k]) for k in below)  # only the cascade's layers are re-initialised


def test_spearman_of_a_flat_map_is_undefined():
    flat, ramp = np.zeros((1, 4, 4)), np.arange(16.0).reshape(1, 4, 4)
    assert np.isnan(cams.spearman_per_image(flat, ramp)).all()
    np.testing.assert_allclose(cams.spearman_per_image(ramp, -ramp), -1.0)
