"""Stage 05: CAMs on a random-init one-channel ResNet-50, coordinate mapping, localization scores, ROAD."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mammo_utils import explain, paths
from mammo_utils.config import load_config
from mammo_utils.errors import MissingStageOutput
from mammo_utils.models import Classifier, save_classifier
from mammo_utils.preprocess import Transform

SIZE = 64


@pytest.fixture(scope="module")
def model() -> Classifier:
    torch.manual_seed(0)
    return Classifier().eval()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    torch.manual_seed(1)
    return torch.rand(3, 1, SIZE, SIZE)


@pytest.mark.parametrize("method", explain.METHODS)
def test_cams_are_maps_in_unit_range(model, images, method):
    cams = explain.compute_cams(model, images, method, batch_size=2, device="cpu")
    assert cams.shape == (3, SIZE, SIZE)
    assert np.isfinite(cams).all()
    assert cams.min() >= 0.0 and cams.max() <= 1.0


def test_unknown_method_is_refused(model, images):
    with pytest.raises(ValueError, match="gradcam"):
        explain.compute_cams(model, images, "scorecam")


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
    back = explain.cam_to_original(cam, TRANSFORM)
    assert back.shape == (100, 120)
    peak_row, peak_col = np.unravel_index(int(np.argmax(back)), back.shape)
    tolerance = 1.0 / TRANSFORM.scale + 1.0  # one output pixel covers 1/scale original pixels
    assert abs(peak_col - 70) <= tolerance and abs(peak_row - 30) <= tolerance
    np.testing.assert_allclose(explain.peak_to_original(cam, TRANSFORM), [70, 30], atol=tolerance)
    assert back[:, :10].max() == 0 and back[:5].max() == 0  # nothing outside the crop box


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
    assert explain.pointing_game(inside, mask) is True
    assert explain.pointing_game(outside, mask) is False
    assert explain.pointing_game(np.ones((10, 10)), mask) is False  # a flat map points nowhere


def test_energy_inside_and_chance_on_constructed_maps():
    mask = _square_mask()
    cam = np.zeros((10, 10))
    cam[2:5, 2:5] = 2.0  # 9 pixels x 2 = 18 inside
    cam[7:9, 7:9] = 3.0  # 4 pixels x 3 = 12 outside
    assert explain.energy_inside(cam, mask) == pytest.approx(18 / 30)
    assert explain.energy_inside(np.ones((10, 10)), mask) == pytest.approx(0.09)  # flat map = chance
    assert np.isnan(explain.energy_inside(np.zeros((10, 10)), mask))
    assert explain.chance_level(mask) == pytest.approx(0.09)
    breast = np.zeros((10, 10), dtype=bool)
    breast[:, :5] = True  # 50 pixels, holding the whole lesion
    assert explain.chance_level(mask, breast) == pytest.approx(9 / 50)


def test_patient_bootstrap_ci_contains_estimate_and_narrows():
    rng = np.random.default_rng(0)

    def width(n_patients: int) -> float:
        values = rng.binomial(1, 0.6, size=2 * n_patients).astype(float)
        patients = np.repeat(np.arange(n_patients), 2)
        ci = explain.patient_bootstrap_ci(values, patients, n_resamples=500, seed=0)
        assert ci["ci_low"] <= ci["estimate"] <= ci["ci_high"]
        assert ci["estimate"] == pytest.approx(values.mean())
        assert ci["n"] == 2 * n_patients and ci["n_patients"] == n_patients
        return ci["ci_high"] - ci["ci_low"]

    assert width(400) < width(10)
    values = np.array([1.0, np.nan, 0.0])
    assert explain.patient_bootstrap_ci(values, ["a", "b", "c"], n_resamples=50)["n"] == 2


def test_road_scores_are_finite_for_each_method(model, images):
    for method in explain.METHODS:
        cams = explain.compute_cams(model, images[:2], method)
        scores = explain.road_scores(model, images[:2], cams, percentiles=(20, 50, 80))
        assert scores.shape == (2,) and np.isfinite(scores).all()


def test_road_scores_equal_the_library_roadcombined(model, images):
    from pytorch_grad_cam.metrics.road import ROADCombined

    rng = np.random.default_rng(0)
    cams = rng.random((2, SIZE, SIZE)).astype(np.float32)  # no ties: the jitter changes no ranking
    ours = explain.road_scores(model, images[:2], cams, percentiles=(30, 70), seed=3)
    torch.manual_seed(3)
    theirs = ROADCombined(percentiles=[30, 70])(images[:2], cams, explain.positive_class_targets(2), model)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def _fake_run(tmp_path, with_predictions: bool = True):
    """A run folder as stages 01 and 03 leave it: 6 test images (4 with lesions) and two classifiers."""
    # Two images for overlays and ROAD keep the test fast (ROAD imputes 18 times per image and method).
    cfg = load_config(profile="smoke", dataset="synthetic", runs_dir=str(tmp_path), overrides=["explain.n_images=2"])
    prep = paths.stage_dir(cfg, "prepare")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        array = rng.uniform(0, 1, size=(SIZE, SIZE)).astype(np.float16)
        np.save(prep / f"img{k}.npy", array)
        lesion_path = ""
        if k < 4:
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            mask[10 + 5 * k : 22 + 5 * k, 20:34] = 1
            lesion_path = str(prep / f"les{k}.npy")
            np.save(lesion_path, mask)
        rows.append({"image_id": f"img{k}", "patient_id": f"p{k // 2}", "split": "test", "abnormal": int(k < 4),
                     "malignant": int(k < 2), "array_path": str(prep / f"img{k}.npy"), "lesion_path": lesion_path,
                     **TRANSFORM.to_dict()})
    rows.append({**rows[0], "image_id": "train0", "patient_id": "p9", "split": "train"})
    pd.DataFrame(rows).to_csv(prep / "preprocessed.csv", index=False)
    fine = paths.stage_dir(cfg, "finetune")
    if with_predictions:
        preds = [{"image_id": r["image_id"], "patient_id": r["patient_id"], "split": "test", "fold": 0,
                  "label": r["abnormal"], "probability": p, "init": init, "protocol": "full", "label_fraction": 1.0}
                 for init in ("simclr", "random") for r, p in zip(rows[:6], rng.uniform(size=6), strict=True)]
        pd.DataFrame(preds).to_csv(fine / "predictions.csv", index=False)
        torch.manual_seed(0)
        for init in ("simclr", "random"):
            save_classifier(fine / init / "model.pt", Classifier(), meta={"init": init})
    return cfg


def test_run_explain_writes_scores_and_figures(tmp_path):
    cfg = _fake_run(tmp_path)
    out = explain.run_explain(cfg)
    assert out == paths.stage_dir(cfg, "explain", create=False)
    result = json.loads((out / "localization.json").read_text())
    assert result == explain.load_localization(cfg)
    assert result["n_test_images"] == 6 and result["n_with_lesion"] == 4
    assert set(result["inits"]) == {"simclr", "random"}
    for init in ("simclr", "random"):
        for method in explain.METHODS:
            entry = result["inits"][init]["methods"][method]
            assert set(entry) >= {"pointing_game", "energy_inside", "chance_level", "n", "road"}
            assert entry["n"] == 4 and entry["pointing_game"]["n_patients"] == 2
            assert 0.0 <= entry["pointing_game"]["estimate"] <= 1.0
            assert np.isfinite(entry["road"]["mean"])
    assert 0 < result["chance_level"]["estimate"] < 1
    assert set(result["comparison"]["methods"]) == set(explain.METHODS)
    for name in ("overlays", "outcome_grid", "original_overlay"):
        for init in ("simclr", "random"):
            assert (out / f"{name}_{init}.png").stat().st_size > 1000
    assert (out / "localization.png").stat().st_size > 1000
    before = (out / "localization.json").stat().st_mtime_ns
    assert explain.run_explain(cfg) == out  # up to date: nothing is recomputed
    assert (out / "localization.json").stat().st_mtime_ns == before


def test_missing_predictions_names_the_finetune_stage(tmp_path):
    cfg = _fake_run(tmp_path, with_predictions=False)
    with pytest.raises(MissingStageOutput, match="finetune") as err:
        explain.run_explain(cfg)
    assert "predictions.csv" in str(err.value) and "\n" not in str(err.value)
