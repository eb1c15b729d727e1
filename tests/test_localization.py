"""Localisation and faithfulness scores: pointing game, energy inside, chance level, patient bootstrap, ROAD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.gradcam import road
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
    assert localization.pointing_game(inside, mask) is True
    assert localization.pointing_game(outside, mask) is False
    assert localization.pointing_game(np.ones((10, 10)), mask) is False  # a flat map points nowhere


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
