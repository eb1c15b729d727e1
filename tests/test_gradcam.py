"""Stage 05 on a fake run folder: what localization.json and the figures hold, and stage 04's thresholds."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from mammo_utils.config import load_config
from mammo_utils.errors import ConfigError, MissingStageOutput
from mammo_utils.evaluate.stage import decision_threshold, load_metrics
from mammo_utils.gradcam import stage as gradcam_stage
from mammo_utils.gradcam.cams import compute_cams
from mammo_utils.gradcam.scores import energy_inside, pointing_game
from mammo_utils.models import Classifier, load_classifier, save_classifier
from mammo_utils.prepare.preprocess import Transform
from mammo_utils.runs import paths
from mammo_utils.runs.files import atomic_write_json
from mammo_utils.runs.provenance import provenance

SIZE = 64
INITS = ("simclr", "random")
HALF = SIZE // 2
LESION_PX = HALF * HALF  # each fake lesion is one quadrant of the image
TRANSFORM = Transform(orig_width=120, orig_height=100, crop_x0=10, crop_y0=5, crop_x1=90, crop_y1=95,
                      flipped=True, scale=SIZE / 90, out_size=SIZE)


def _fake_run(tmp_path, with_predictions: bool = True, overrides: tuple[str, ...] = ()):
    """A run folder as stages 01 and 03 leave it: 6 test images (4 with lesions) and two classifiers."""
    # Two images for overlays and ROAD keep the test fast (ROAD imputes 18 times per image and method).
    cfg = load_config(profile="smoke", dataset="synthetic", runs_dir=str(tmp_path),
                      overrides=["gradcam.n_images=2", *overrides])
    prep = paths.stage_dir(cfg, "prepare")
    rng = np.random.default_rng(0)
    rows = []
    for k in range(6):
        array = rng.uniform(0, 1, size=(SIZE, SIZE)).astype(np.float16)
        np.save(prep / f"img{k}.npy", array)
        lesion_path = ""
        if k < 4:
            mask = np.zeros((SIZE, SIZE), dtype=np.uint8)
            # Quadrant k: at 64 px a CAM has 2 x 2 cells, so its maximum lands in one quadrant and hits happen.
            row, col = divmod(k, 2)
            mask[row * HALF : (row + 1) * HALF, col * HALF : (col + 1) * HALF] = 1
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
                  "label": r["abnormal"], "probability": p, "init": init, "classifier": "full", "label_fraction": 1.0,
                  "task": cfg.task, "headline": True}
                 for init in INITS for r, p in zip(rows[:6], rng.uniform(size=6), strict=True)]
        pd.DataFrame(preds).to_csv(fine / "predictions.csv", index=False)
        torch.manual_seed(0)
        for init in INITS:
            save_classifier(fine / init / "model.pt", Classifier(), meta={"init": init})
    return cfg


def _fake_metrics(cfg, thresholds: dict[str, float]) -> None:
    """Stage 04's metrics.json with the given thresholds and no metric (the report reads it too)."""
    models = {init: {"threshold": t, "metrics": {}, "n_test_patients": 2} for init, t in thresholds.items()}
    atomic_write_json(paths.stage_dir(cfg, "evaluate") / "metrics.json", {
        "task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "split": "test",
        "bootstrap_resamples": cfg.evaluate.bootstrap_resamples, "ci_level": cfg.evaluate.ci_level,
        "models": models, "tasks": {cfg.task: {"models": models}}, **provenance(cfg)})


def _recomputed_scores(cfg, init: str, method: str) -> tuple[float, float, int]:
    """Pointing game (on the feature grid), energy inside (on the upsampled maps) and the number of flat maps,
    computed here from the saved classifier and the lesion masks."""
    table = pd.read_csv(paths.require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)
    table = table[(table["split"] == "test") & (table["lesion_path"] != "")].sort_values("image_id")
    x = torch.from_numpy(np.stack([np.load(p).astype(np.float32) for p in table["array_path"]])[:, None])
    masks = [np.load(p) for p in table["lesion_path"]]
    model, _ = load_classifier(paths.stage_dir(cfg, "finetune", create=False) / init / "model.pt")
    grids = compute_cams(model, x, method, batch_size=1, device="cpu", on_grid=True)
    maps = compute_cams(model, x, method, batch_size=1, device="cpu")
    hits = np.array([pointing_game(g, les) for g, les in zip(grids, masks, strict=True)])
    energy = np.array([energy_inside(m, les) for m, les in zip(maps, masks, strict=True)])
    # A map that is zero everywhere (Grad-CAM of an untrained net, often) points nowhere and has no energy: NaN in
    # both, left out of both.
    assert np.array_equal(np.isnan(hits), np.isnan(energy))
    flat = int(np.isnan(hits).sum())
    if flat == len(hits):
        return np.nan, np.nan, flat
    return float(np.nanmean(hits)), float(np.nanmean(energy)), flat


def _png(path) -> Image.Image:
    image = Image.open(path)
    assert image.format == "PNG"
    image.load()
    return image


def test_run_gradcam_scores_match_an_independent_recomputation(tmp_path):
    cfg = _fake_run(tmp_path)
    _fake_metrics(cfg, {"simclr": 0.3, "random": 0.7})
    out = gradcam_stage.run_gradcam(cfg)
    assert out == paths.stage_dir(cfg, "gradcam", create=False)
    result = gradcam_stage.load_localization(cfg)
    assert result["n_test_images"] == 6 and result["n_with_lesion"] == 4
    assert result["methods"] == list(cfg.gradcam.cams)
    assert set(result["inits"]) == set(INITS)
    # The fake images have no zero pixel: the breast is the whole grid and chance is the lesion's area share.
    assert 0.0 <= result["chance_level"]["estimate"] <= 1.0
    assert result["chance_level"]["estimate"] == pytest.approx(LESION_PX / SIZE**2)
    road_n = result["road"]["n_images"]
    assert road_n == 2 and len(result["road"]["image_ids"]) == road_n
    for init, threshold in (("simclr", 0.3), ("random", 0.7)):
        assert result["inits"][init]["threshold"] == threshold  # stage 04's, not 0.5
        methods = result["inits"][init]["methods"]
        assert set(methods) == set(cfg.gradcam.cams)  # the JSON is written with sorted keys
        for method, entry in methods.items():
            hit_rate, energy, flat = _recomputed_scores(cfg, init, method)
            pg = entry["pointing_game"]
            got = pg["estimate"]  # null in JSON when every map was flat
            assert (np.nan if got is None else got) == pytest.approx(hit_rate, abs=1e-12, nan_ok=True), (init, method)
            got = entry["energy_inside"]["estimate"]
            assert (np.nan if got is None else got) == pytest.approx(energy, rel=1e-4, nan_ok=True), (init, method)
            assert entry["n"] == 4 and entry["n_flat"] == flat and pg["n"] == 4 - flat
            if flat < 4:
                assert pg["ci_low"] <= pg["estimate"] <= pg["ci_high"]
            if flat < 4:  # the chance of the images scored (null in JSON when none was)
                assert entry["chance_level"] == pytest.approx(LESION_PX / SIZE**2)
            road = entry["road"]["per_image"]
            assert len(road) == road_n and np.isfinite(road).all()
            assert entry["road"]["mean"] == pytest.approx(np.mean(road))
    estimates = [m["pointing_game"]["estimate"] for e in result["inits"].values() for m in e["methods"].values()]
    assert max(e for e in estimates if e is not None) > 0  # the recomputation above compared some hits
    comparison = result["comparison"]
    assert (comparison["a"], comparison["b"]) == ("simclr", "random")
    for method in cfg.gradcam.cams:
        difference = comparison["methods"][method]["pointing_game_difference"]
        a, b = (result["inits"][i]["methods"][method] for i in INITS)
        if a["n_flat"] == b["n_flat"] == 0:
            assert difference["estimate"] == pytest.approx(a["pointing_game"]["estimate"] - b["pointing_game"]["estimate"])
        assert difference["n"] <= min(a["pointing_game"]["n"], b["pointing_game"]["n"])  # paired on the same images

    n_methods = len(cfg.gradcam.cams)
    for init in INITS:
        overlays = _png(out / f"overlays_{init}.png")  # 2 rows: input + one column per method
        assert overlays.width > 1.4 * overlays.height and 300 < overlays.height < 1200
        assert overlays.width > 150 * (1 + n_methods)
        grid = _png(out / f"outcome_grid_{init}.png")  # 4 rows (TP/FP/FN/TN) of up to 4 images
        assert 0.6 < grid.width / grid.height < 1.3 and 500 < grid.height < 2000
        original = _png(out / f"original_overlay_{init}.png")  # two panels side by side
        assert 1.4 < original.width / original.height < 2.6
        assert np.asarray(original.convert("L")).std() > 10  # something is drawn
    chart = _png(out / "localization.png")
    assert 1.6 < chart.width / chart.height < 3.2 and 300 < chart.height < 800

    before = (out / "localization.json").stat().st_mtime_ns
    assert gradcam_stage.run_gradcam(cfg) == out  # up to date: nothing is recomputed
    assert (out / "localization.json").stat().st_mtime_ns == before
    assert gradcam_stage._scored_as_now(cfg)
    older = {**result, "settings": {**result["settings"], "pointing_game": "the maximum of the upsampled map"}}
    atomic_write_json(out / "localization.json", older)  # what an earlier version of the stage wrote
    assert not gradcam_stage._scored_as_now(cfg)  # so the next run computes it again, whatever its key says


def test_run_gradcam_runs_the_methods_of_the_setting(tmp_path):
    cfg = _fake_run(tmp_path, overrides=("gradcam.cams=eigencam",))
    result = gradcam_stage.load_localization(cfg) if gradcam_stage.run_gradcam(cfg) else None
    assert result["methods"] == ["eigencam"]
    assert all(set(entry["methods"]) == {"eigencam"} for entry in result["inits"].values())
    assert result["inits"]["simclr"]["threshold"] == 0.5  # no stage 04 in this run


def test_unknown_cam_method_is_a_config_error(tmp_path):
    cfg = _fake_run(tmp_path, overrides=("gradcam.cams=gradcam,scorecam",))
    with pytest.raises(ConfigError, match="gradcam.cams") as err:
        gradcam_stage.run_gradcam(cfg)
    assert "'scorecam'" in str(err.value) and "gradcam++" in str(err.value) and "\n" not in str(err.value)
    assert not paths.stage_dir(cfg, "gradcam", create=False).exists()  # refused before any work


def test_missing_predictions_names_the_finetune_stage(tmp_path):
    cfg = _fake_run(tmp_path, with_predictions=False)
    with pytest.raises(MissingStageOutput, match="finetune") as err:
        gradcam_stage.run_gradcam(cfg)
    assert "predictions.csv" in str(err.value) and "\n" not in str(err.value)


def test_decision_threshold_comes_from_stage_04(tmp_path, caplog):
    cfg = load_config(profile="smoke", dataset="synthetic", runs_dir=str(tmp_path))
    with pytest.raises(MissingStageOutput, match="evaluate"):
        load_metrics(cfg)
    with caplog.at_level(logging.WARNING, logger="mammo_utils.evaluate.stage"):
        assert decision_threshold(cfg, "simclr") == 0.5
    assert "metrics.json" in caplog.text
    _fake_metrics(cfg, {"simclr": 0.25, "random": 1.5})
    assert decision_threshold(cfg, "simclr") == 0.25
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="mammo_utils.evaluate.stage"):
        assert decision_threshold(cfg, "random") == 0.5  # not a probability
        assert decision_threshold(cfg, "imagenet") == 0.5  # no such model
    assert caplog.text.count("Decision threshold 0.5") == 2
    other = load_config(profile="smoke", dataset="synthetic", runs_dir=str(tmp_path), task="malignant")
    assert decision_threshold(other, "simclr") == 0.5  # stage 04 scored another task
