"""Localisation and faithfulness scores: pointing game, energy inside, chance level, patient bootstrap, ROAD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.gradcam import cams, road
from mammo_utils.gradcam import scores as localization
from mammo_utils.gradcam.cams import CAM_METHODS, compute_cams, positive_class_targets
from mammo_utils.models import Classifier

SIZE = 64


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    return Classifier().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(2, 1, SIZE, SIZE)


def _square_mask() -> np.ndarray:
    mask = np.zeros((10, 10), dtype=np.uint8)
    mask[2:5, 2:5] = 1  # 9 of 100 pixels
    return mask


def test_pointing_game_on_constructed_maps():
    mask = _square_mask()
    inside = np.zeros((10, 10))
    inside[3, 3] = 1.0
    outside = np.zeros((10, 10))
    outside[8, 8] = 1.0
    assert localization.pointing_game(inside, mask) == 1.0
    assert localization.pointing_game(outside, mask) == 0.0
    tied = np.zeros((10, 10))
    tied[3, 3] = tied[8, 8] = 1.0
    assert localization.pointing_game(tied, mask) == 1.0  # the first maximum in row-major order counts


@pytest.mark.parametrize("flat", [np.ones((4, 4)), np.zeros((4, 4)), np.full((4, 4), np.nan)])
def test_a_flat_map_points_nowhere_and_is_left_out(flat):
    lesion = np.zeros((128, 128), dtype=bool)
    lesion[40:90, 40:90] = True
    assert np.isnan(localization.pointing_game(flat, lesion))  # neither a hit nor a miss
    ci = localization.patient_bootstrap_ci(np.array([1.0, localization.pointing_game(flat, lesion), 0.0]),
                                           ["a", "b", "c"], n_resamples=50)
    assert ci["n"] == 2 and ci["estimate"] == pytest.approx(0.5)  # the average leaves it out


def _edge_cell_case(row: int, col: int, grid: int = 4, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """A feature-grid map whose hottest cell is (row, col), and an 8 px lesion around that cell's centre."""
    cam = np.full((grid, grid), 0.2, dtype=np.float32)
    cam[row, col] = 1.0
    cell = size // grid
    lesion = np.zeros((size, size), dtype=bool)
    lesion[row * cell + cell // 2 - 4 : row * cell + cell // 2 + 4, col * cell + cell // 2 - 4 : col * cell + cell // 2 + 4] = True
    return cam, lesion


@pytest.mark.parametrize(("row", "col"), [(0, 0), (0, 1), (2, 0), (1, 2), (3, 3)])
def test_a_map_pointing_at_a_lesion_in_any_cell_hits(row, col):
    """The top row and the left column included: bilinear upsampling turns a peak there into a plateau reaching
    the image border, and the maximum of the upsampled map lands on the border, outside any lesion."""
    cam, lesion = _edge_cell_case(row, col)
    assert localization.pointing_game(cam, lesion) == 1.0
    x, y = cams.cam_peak(cam, lesion.shape)
    assert (x, y) == (32 * col + 16, 32 * row + 16)  # the centre of the hottest cell
    upsampled = cams.upsample_cams(cam[None], lesion.shape)[0]
    x_up, y_up = cams.cam_peak(upsampled)
    assert (x_up == 0 or y_up == 0) == (row == 0 or col == 0)  # the artefact the grid rule avoids


def test_maps_on_the_feature_grid_upsample_to_the_librarys_maps():
    """compute_cams(on_grid=True) keeps the map pytorch-grad-cam upsamples: upsampling it gives the same maps."""
    torch.manual_seed(0)
    model = Classifier().eval()
    x = torch.rand(2, 1, 128, 128)
    for method in CAM_METHODS:
        grid = compute_cams(model, x, method, on_grid=True)
        assert grid.shape == (2, 4, 4)
        np.testing.assert_allclose(cams.upsample_cams(grid, (128, 128)), compute_cams(model, x, method), atol=1e-6)


def test_energy_inside_and_chance_on_constructed_maps():
    mask = _square_mask()
    cam = np.zeros((10, 10))
    cam[2:5, 2:5] = 2.0  # 9 pixels x 2 = 18 inside
    cam[7:9, 7:9] = 3.0  # 4 pixels x 3 = 12 outside
    assert localization.energy_inside(cam, mask) == pytest.approx(18 / 30)
    assert localization.energy_inside(np.ones((10, 10)), mask) == pytest.approx(0.09)  # flat map = chance
    assert np.isnan(localization.energy_inside(np.zeros((10, 10)), mask))
    assert localization.chance_level(mask) == pytest.approx(0.09)
    breast = np.zeros((10, 10), dtype=bool)
    breast[:, :5] = True  # 50 pixels, holding the whole lesion
    assert localization.chance_level(mask, breast) == pytest.approx(9 / 50)


def test_patient_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)

    def width(n_patients: int) -> float:
        values = rng.binomial(1, 0.6, size=2 * n_patients).astype(float)
        patients = np.repeat(np.arange(n_patients), 2)
        ci = localization.patient_bootstrap_ci(values, patients, n_resamples=500, seed=0)
        assert ci["ci_low"] <= ci["estimate"] <= ci["ci_high"]
        assert ci["estimate"] == pytest.approx(values.mean())
        assert ci["n"] == 2 * n_patients and ci["n_patients"] == n_patients
        return ci["ci_high"] - ci["ci_low"]

    assert width(400) < width(10)
    values = np.array([1.0, np.nan, 0.0])
    assert localization.patient_bootstrap_ci(values, ["a", "b", "c"], n_resamples=50)["n"] == 2


@pytest.mark.parametrize("method", list(CAM_METHODS))
def test_road_scores_are_finite_for_each_method(model, images, method):
    cams = compute_cams(model, images, method)
    scores = road.road_scores(model, images, cams, percentiles=(20, 50, 80))
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_road_scores_equal_the_library_roadcombined(model, images):
    from pytorch_grad_cam.metrics.road import ROADCombined

    rng = np.random.default_rng(0)
    cams = rng.random((2, SIZE, SIZE)).astype(np.float32)  # no ties: the jitter changes no ranking
    ours = road.road_scores(model, images, cams, percentiles=(30, 70), seed=3)
    torch.manual_seed(3)
    theirs = ROADCombined(percentiles=[30, 70])(images, cams, positive_class_targets(2), model)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
