"""Stage 05: class activation maps of every fine-tuned classifier, checked against the radiologists' marks.

For each initialisation and each CAM method of ``gradcam.cams`` (:mod:`mammo_utils.gradcam.cams`), the stage
computes maps on the test images and scores them (:mod:`mammo_utils.gradcam.scores`): pointing game and energy
inside the lesion beside their chance level, ROAD faithfulness on a small sample, and each self-supervised
initialisation against random (paired on the same images), all with patient-level bootstrap intervals. It
draws the figures of :mod:`mammo_utils.gradcam.figures` and writes ``05_gradcam/localization.json``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage
from tqdm.auto import tqdm

from mammo_utils.config import Config, show_progress
from mammo_utils.errors import CheckpointError, DataError
from mammo_utils.evaluate.stage import decision_threshold, headline_predictions
from mammo_utils.gradcam import figures
from mammo_utils.gradcam.cams import TARGET_LAYER, cam_grid_size, check_methods, compute_cams, upsample_cams
from mammo_utils.gradcam.road import ROAD_PERCENTILES, road_scores
from mammo_utils.gradcam.scores import chance_level, energy_inside, patient_bootstrap_ci, pointing_game
from mammo_utils.models import load_classifier
from mammo_utils.prepare.preprocess import Transform
from mammo_utils.prepare.stage import load_index
from mammo_utils.pretrain.methods import INITS
from mammo_utils.pretrain.methods import METHODS as SELF_SUPERVISED
from mammo_utils.runs import paths
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_json
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.stage import StageRun

log = logging.getLogger(__name__)

SECTIONS = ("task", "seed", "gradcam", "evaluate")  # and, through stage_key, everything stages 03 and 04 read
ROAD_MAX_IMAGES = 8  # the noisy linear imputer solves one sparse system per image and threshold (~1 s at 512 px)
CAM_NAMES = {"gradcam": "Grad-CAM", "gradcam++": "Grad-CAM++", "eigencam": "EigenCAM"}  # figure titles
# What the scores mean, written into localization.json's settings: a file scored under other rules is computed
# again even when the stage's settings have not changed.
SCORING = {
    "chance": "lesion area / breast area on the network input grid",
    "pointing_game": "hit when the centre of the hottest feature-grid cell lies in the lesion; a flat map is left "
                     "out (NaN) and counted in n_flat",
}


@dataclass(frozen=True)
class _TestImages:
    """The test split as the stage uses it, sorted by ``image_id``."""

    table: pd.DataFrame  # preprocessed.csv's rows
    arrays: np.ndarray  # (N, S, S) float32 network inputs
    lesions: list  # per image a boolean (S, S) mask, or None without a located lesion
    with_lesion: list[int]  # indices of the images with a lesion: the ones scored

    @property
    def image_ids(self) -> list[str]:
        return self.table["image_id"].tolist()

    @property
    def lesion_patients(self) -> np.ndarray:
        return self.table["patient_id"].astype(str).to_numpy()[self.with_lesion]


def _load_lesion(path: str) -> np.ndarray | None:
    if not isinstance(path, str) or not path.strip():
        return None
    mask = np.load(path) > 0
    return mask if mask.any() else None


def _load_test_images(images: pd.DataFrame, cfg: Config) -> _TestImages:
    test = images[images["split"].astype(str) == "test"].copy()
    if test.empty:
        raise DataError(f"No test images in preprocessed.csv. {paths.how_to_run(cfg, 'prepare')}")
    test["image_id"] = test["image_id"].astype(str)
    test = test.sort_values("image_id").reset_index(drop=True)
    arrays = np.stack([np.load(p).astype(np.float32) for p in test["array_path"]])
    lesions = [_load_lesion(p) for p in test["lesion_path"]]
    return _TestImages(test, arrays, lesions, [i for i, m in enumerate(lesions) if m is not None])


def _finetuned_inits(cfg: Config) -> list[str]:
    """The inits of ``finetune.inits`` that stage 03 left a classifier for."""
    finetune_dir = paths.stage_dir(cfg, "finetune", create=False)
    inits = [i for i in cfg.finetune.inits if (finetune_dir / i / "model.pt").exists()]
    if not inits:
        raise CheckpointError(
            f"No classifier checkpoint ({', '.join(f'{i}/model.pt' for i in cfg.finetune.inits)}) in "
            f"{finetune_dir}. {paths.how_to_run(cfg, 'finetune')}"
        )
    return inits


def _test_predictions(cfg: Config, predictions: pd.DataFrame, init: str) -> pd.DataFrame:
    """Test label and probability per film of one init's headline run of ``cfg.task`` (the model saved at
    ``<init>/model.pt``; other tasks' live in ``<init>-<task>/``)."""
    p = headline_predictions(predictions, cfg.task)
    p = p[(p["split"].astype(str) == "test") & (p["init"].astype(str) == init)]
    return p.assign(image_id=p.image_id.astype(str)).set_index("image_id")[["label", "probability"]]


def _labels_and_probabilities(cfg: Config, predictions: pd.DataFrame, init: str, test: _TestImages):
    """Per test image: the task's label as stage 03 wrote it (the manifest's where it has no prediction) and
    the predicted probability (NaN where none)."""
    preds = _test_predictions(cfg, predictions, init).reindex(test.table["image_id"])
    labels = pd.to_numeric(preds["label"], errors="coerce").to_numpy()
    if cfg.task in test.table:
        labels = np.where(np.isfinite(labels), labels, pd.to_numeric(test.table[cfg.task], errors="coerce"))
    return labels, preds["probability"].to_numpy(dtype=np.float64)


def _score_method(model, cams: np.ndarray, grids: np.ndarray, x: torch.Tensor, test: _TestImages,
                  road_idx: list[int], chance: np.ndarray, cfg: Config) -> tuple[dict, dict]:
    """One method's entry of ``localization.json`` and its per-image hits and energies (for the comparison).

    The pointing game is played on the feature grid (``grids``), the energy on the upsampled maps (``cams``). A
    flat map scores NaN in both and is left out; ``chance_level`` is the mean over the images that were scored,
    so that each score is read beside the chance of the same images."""
    boot = _bootstrap_settings(cfg)
    lesions, with_lesion, patients = test.lesions, test.with_lesion, test.lesion_patients
    hits = np.array([pointing_game(grids[i], lesions[i]) for i in with_lesion], dtype=np.float64)
    energy = np.array([energy_inside(cams[i], lesions[i]) for i in with_lesion], dtype=np.float64)
    road = road_scores(model, x[road_idx], cams[road_idx], seed=cfg.seed, batch_size=cfg.finetune.batch_size)
    scored = np.isfinite(hits)
    entry = {
        "pointing_game": patient_bootstrap_ci(hits, patients, **boot),
        "energy_inside": patient_bootstrap_ci(energy, patients, **boot),
        "chance_level": float(np.nanmean(chance[scored])) if scored.any() else float("nan"),
        "n": len(with_lesion),
        "n_flat": int((~scored).sum()),
        "road": {"mean": float(np.mean(road)) if len(road) else float("nan"), "n": int(len(road)),
                 "per_image": [float(v) for v in road]},
    }
    return entry, {"hits": hits, "energy": energy}


def _bootstrap_settings(cfg: Config) -> dict:
    return dict(n_resamples=cfg.evaluate.bootstrap_resamples, seed=cfg.seed, level=cfg.evaluate.ci_level)


def _draw_figures(init: str, test: _TestImages, cams_by_method: dict, grids_by_method: dict, labels, prob,
                  threshold: float, overlay_idx: list[int], out_dir: Path) -> None:
    """The three figures of one init; the outcome grid and the original overlay use the first method. The cross
    on each map is where the pointing game looks: the centre of the hottest feature-grid cell."""
    method = next(iter(cams_by_method))
    cams, grids = cams_by_method[method], grids_by_method[method]
    figures.plot_overlays(test.arrays, cams_by_method, test.lesions, overlay_idx, test.image_ids,
                          out_dir / f"overlays_{init}.png", title=f"{init} classifier", grids_by_method=grids_by_method)
    if np.isfinite(prob).any():
        figures.plot_outcome_grid(test.arrays, cams, test.lesions, labels, prob, threshold, test.image_ids,
                                  out_dir / f"outcome_grid_{init}.png",
                                  title=f"{init} classifier, {CAM_NAMES.get(method, method)}, "
                                        f"threshold {threshold:.2f}", grids=grids)
    else:
        log.warning("No test predictions for init %r; outcome grid skipped.", init)
    if overlay_idx:
        i = overlay_idx[0]
        figures.plot_original_overlay(test.arrays[i], cams[i], test.lesions[i],
                                      Transform.from_dict(test.table.iloc[i].to_dict()),
                                      out_dir / f"original_overlay_{init}.png", title=test.image_ids[i], grid=grids[i])


def _gradcam_init(cfg: Config, init: str, methods: tuple[str, ...], test: _TestImages, predictions: pd.DataFrame,
                  samples: dict, chance: np.ndarray, out_dir: Path, progress) -> tuple[dict, dict]:
    """CAMs of one init's classifier by every method, their scores and figures."""
    finetune_dir = paths.stage_dir(cfg, "finetune", create=False)
    model, _ = load_classifier(finetune_dir / init / "model.pt", hint=paths.how_to_run(cfg, "finetune"))
    device = placement(cfg).device
    model = model.to(device)
    feature_grid = cam_grid_size(model, test.arrays.shape[-1])
    log.info("%s: CAMs on the %dx%d feature grid of %s", init, *feature_grid, TARGET_LAYER)
    labels, prob = _labels_and_probabilities(cfg, predictions, init, test)
    threshold = decision_threshold(cfg, init)
    grid = figures.outcome_grid_indices(labels, prob, threshold) if np.isfinite(prob).any() else []
    x = torch.from_numpy(test.arrays[:, None])
    entry: dict = {"threshold": threshold, "methods": {}}
    per_image, cams_by_method, grids_by_method = {}, {}, {}
    for k, method in enumerate(methods):
        # CAMs only where something reads them: the scored images, the ROAD sample and, for the first method,
        # the outcome grid's images. The other maps stay zero and are never used.
        needed = sorted(set(samples["scored"]) | (set(grid) if k == 0 else set()))
        grids = np.zeros((len(test.table), *feature_grid), dtype=np.float32)
        if needed:
            grids[needed] = compute_cams(model, x[needed], method, batch_size=cfg.finetune.batch_size,
                                         device=device, on_grid=True)
        cams = upsample_cams(grids, test.arrays.shape[-2:])
        cams_by_method[method], grids_by_method[method] = cams, grids
        entry["methods"][method], per_image[method] = _score_method(model, cams, grids, x, test, samples["road"],
                                                                    chance, cfg)
        progress.update()
        log.info("%s %s: pointing game %.2f, energy inside %.2f", init, method,
                 entry["methods"][method]["pointing_game"]["estimate"],
                 entry["methods"][method]["energy_inside"]["estimate"])
    _draw_figures(init, test, cams_by_method, grids_by_method, labels, prob, threshold, samples["overlay"], out_dir)
    return entry, per_image


def _samples(test: _TestImages, cfg: Config) -> dict[str, list[int]]:
    """Seeded image choices: ``overlay`` (images with a lesion drawn), ``road`` (ROAD's sample), ``scored``."""
    rng = np.random.default_rng(cfg.seed)
    n_show = max(1, int(cfg.gradcam.n_images))
    with_lesion = test.with_lesion
    overlay = sorted(rng.permutation(with_lesion)[:n_show].tolist()) if with_lesion else []
    road = sorted(rng.permutation(len(test.table))[: min(n_show, ROAD_MAX_IMAGES)].tolist())
    return {"overlay": overlay, "road": road, "scored": sorted(set(with_lesion) | set(road))}


def _chance_levels(test: _TestImages) -> np.ndarray:
    """Per image with a lesion: lesion area / breast area (the breast: non-zero pixels, holes filled)."""
    breasts = [ndimage.binary_fill_holes(test.arrays[i] > 0) for i in test.with_lesion]
    return np.array([chance_level(test.lesions[i], b if b.any() else None)
                     for i, b in zip(test.with_lesion, breasts, strict=True)])


def _compare(per_image: dict, patient_ids: np.ndarray, boot: dict, a: str, b: str = "random") -> dict:
    """``a`` minus ``b`` (paired: the same test images), per method, with patient-bootstrap CIs."""
    out: dict = {"a": a, "b": b, "methods": {}}
    for method in per_image[a]:
        x, y = per_image[a][method], per_image[b][method]
        out["methods"][method] = {
            f"{name}_difference": patient_bootstrap_ci(x[key] - y[key], patient_ids, **boot)
            for name, key in (("pointing_game", "hits"), ("energy_inside", "energy"))
        }
    return out


def _comparisons(per_image: dict, patient_ids: np.ndarray, boot: dict) -> dict[str, dict]:
    """Every self-supervised init against random, in the order of ``INITS`` (empty without random)."""
    if "random" not in per_image:
        return {}
    return {a: _compare(per_image, patient_ids, boot, a) for a in INITS if a in SELF_SUPERVISED and a in per_image}


def _summary(cfg: Config, methods: tuple[str, ...], test: _TestImages, samples: dict, chance: np.ndarray) -> dict:
    """The run-level part of ``localization.json``; ``inits`` and ``comparison`` are filled in later."""
    return {
        "task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "image_size_px": cfg.image_size_px,
        "target_layer": TARGET_LAYER, "methods": list(methods), "target": "logit of the positive class",
        "n_test_images": int(len(test.table)), "n_with_lesion": len(test.with_lesion),
        "chance_level": patient_bootstrap_ci(chance, test.lesion_patients, **_bootstrap_settings(cfg)),
        "road": {"percentiles": list(ROAD_PERCENTILES), "n_images": len(samples["road"]),
                 "image_ids": [test.image_ids[i] for i in samples["road"]]},
        "settings": {"bootstrap_resamples": cfg.evaluate.bootstrap_resamples, "ci_level": cfg.evaluate.ci_level,
                     "seed": cfg.seed, **SCORING},
        "inits": {},
    }


def run_gradcam(cfg: Config, force: bool = False) -> Path:
    """Stage 05: CAMs of every fine-tuned classifier on the test images, scored against the lesions.

    Reads ``01_prepare/preprocessed.csv``, ``03_finetune/predictions.csv``,
    ``03_finetune/<init>/model.pt`` and stage 04's decision thresholds; writes ``localization.json``,
    ``localization.png`` and, per init, ``overlays_<init>.png``, ``outcome_grid_<init>.png`` and
    ``original_overlay_<init>.png`` into ``05_gradcam/``. Skipped when those settings have not changed since
    the last run, unless ``force``.

    Raises:
        ConfigError: ``gradcam.cams`` names an unknown CAM method.

    Returns:
        The stage folder.
    """
    methods = check_methods(cfg.gradcam.cams)
    run = StageRun(cfg, "gradcam", SECTIONS, ["localization.json"], force or not _scored_as_now(cfg))
    if run.up_to_date:
        return run.folder
    images = load_index(cfg)
    predictions = pd.read_csv(paths.require(cfg, "finetune", "predictions.csv"), keep_default_na=False)
    out_dir = run.begin()
    inits = _finetuned_inits(cfg)
    test = _load_test_images(images, cfg)
    samples, chance = _samples(test, cfg), _chance_levels(test)
    result = _summary(cfg, methods, test, samples, chance)

    per_image = {}
    progress = tqdm(total=len(inits) * len(methods), desc="stage 05 CAMs", disable=None if show_progress() else True)
    for init in inits:
        result["inits"][init], per_image[init] = _gradcam_init(cfg, init, methods, test, predictions, samples,
                                                               chance, out_dir, progress)
    progress.close()
    comparisons = _comparisons(per_image, test.lesion_patients, _bootstrap_settings(cfg))
    # One self-supervised init per run (pretrain.method): "comparison" is its entry, as the report reads it.
    result["comparison"] = next(iter(comparisons.values()), None)
    if len(comparisons) > 1:
        result["comparisons"] = comparisons

    figures.plot_localization(result, out_dir / "localization.png")
    atomic_write_json(out_dir / "localization.json", {**result, **provenance(cfg)})
    log.info("Explanations written to %s", out_dir)
    return run.finish(inits=inits)


def _scored_as_now(cfg: Config) -> bool:
    """Whether the stage's ``localization.json``, if any, was scored under today's :data:`SCORING` (True when
    there is none: the stage's key then decides)."""
    path = paths.stage_dir(cfg, "gradcam", create=False) / "localization.json"
    try:
        settings = json.loads(path.read_text()).get("settings", {})
    except (OSError, json.JSONDecodeError):
        return True
    return all(settings.get(k) == v for k, v in SCORING.items())


def load_localization(cfg: Config) -> dict:
    """The ``localization.json`` written by :func:`run_gradcam` (clear error when the stage has not run)."""
    return json.loads(paths.require(cfg, "gradcam", "localization.json").read_text())
