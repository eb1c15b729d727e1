"""Class activation maps for the one-channel ResNet-50, checked against the radiologists' marks.

Three CAM methods from pytorch-grad-cam (Gildenblat et al.) on ``backbone.layer4[-1]``:
Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and EigenCAM (Muhammad & Yeasin
2020). The classifier has one logit, so the target is the logit itself (``ClassifierOutputTarget(0)``
returns ``output[0]``, a scalar per image; ``BinaryClassifierOutputTarget(1)`` would return the same value
as a one-element tensor). EigenCAM uses no target.

Maps live on the network input grid, which *is* the preprocessed image; :func:`cam_to_original` carries
them back to the original image's pixels through the :class:`~mammo_utils.preprocess.Transform` (undoing
resize, pad, flip and crop). Localization is scored with the pointing game (Zhang et al. 2016) and the
fraction of CAM energy inside the lesion (Wang et al. 2020, Score-CAM), each beside its chance level;
faithfulness with ROAD (Rong et al. 2022), the library's implementation.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.metrics.perturbation_confidence import RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from scipy import ndimage
from tqdm.auto import tqdm

from . import paths
from .config import Config, show_progress
from .errors import CheckpointError, DataError
from .evaluate import headline_predictions
from .metrics import bootstrap_ci
from .preprocess import Transform
from .stage import is_done, mark_done, provenance
from .training import cpu_speedups

log = logging.getLogger(__name__)

METHODS = ("gradcam", "gradcam++", "eigencam")
ROAD_PERCENTILES = (10, 20, 30, 40, 50, 60, 70, 80, 90)  # the library's default thresholds
SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "synthetic", "augment", "pretrain", "finetune",
            "evaluate", "explain", "precision")
ROAD_MAX_IMAGES = 8  # the noisy linear imputer solves one sparse system per image and threshold (~1 s at 512 px)


class _SignedEigenCAM(EigenCAM):
    """EigenCAM with the sign of the first principal component fixed.

    SVD leaves the component's sign arbitrary; the library's EigenCAM then keeps the positive half, which
    can be the background. The library's own sign correction (Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13)
    makes the larger-magnitude side positive.
    """

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        return get_2d_projection_with_sign_correction(activations)


_CAM_CLASSES = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": _SignedEigenCAM}


def positive_class_targets(n: int) -> list[ClassifierOutputTarget]:
    """One target per image: the single logit (positive class = the task's label is 1)."""
    return [ClassifierOutputTarget(0) for _ in range(n)]


def compute_cams(
    model: torch.nn.Module,
    images: torch.Tensor,
    method: str = "gradcam",
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class activation maps of the positive class on the network input grid.

    Args:
        model: a :class:`~mammo_utils.models.Classifier` (``model.backbone.layer4[-1]`` is the target layer).
        images: (B, 1, S, S) images in [0, 1] (the classifier normalises them itself).
        method: ``gradcam``, ``gradcam++`` or ``eigencam``.
        batch_size: images per forward/backward pass.
        device: where to run; defaults to the model's device.

    Returns:
        (B, S, S) float32 maps in [0, 1], each scaled to its own maximum (a flat map is all zeros).
    """
    if method not in _CAM_CLASSES:
        raise ValueError(f"Unknown CAM method {method!r}; choose one of {', '.join(METHODS)}.")
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    out = []
    with _CAM_CLASSES[method](model=model, target_layers=[model.backbone.layer4[-1]]) as cam:
        for start in range(0, len(images), batch_size):
            batch = images[start : start + batch_size].float().to(device)
            if method == "eigencam":  # no gradients needed: the hooks skip tensors without grad
                with torch.no_grad():
                    maps = cam(input_tensor=batch, targets=None)
            else:
                with torch.enable_grad():
                    # Gradients reach layer4 even when the backbone's weights are frozen (linear probe).
                    batch = batch.detach().requires_grad_(True)
                    maps = cam(input_tensor=batch, targets=positive_class_targets(len(batch)))
            out.append(np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0).astype(np.float32))
    if not out:
        return np.zeros((0, *images.shape[-2:]), dtype=np.float32)
    return np.concatenate(out)


def cam_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray:
    """Carry a (S, S) map on the network input back onto the original image's (H, W) pixel grid."""
    return transform.to_original_image(np.asarray(cam, dtype=np.float32))


def peak_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray:
    """Original-image coordinates ``(x, y)`` of the CAM's maximum."""
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return transform.to_original(np.array([[col, row]], dtype=np.float64))[0]


def pointing_game(cam: np.ndarray, lesion_mask: np.ndarray) -> bool:
    """Whether the CAM's maximum falls inside the lesion (a hit in the pointing game).

    A flat map (maximum equal to minimum) points nowhere and counts as a miss; among tied maxima the first
    in row-major order is taken (ties are rare in real-valued maps).
    """
    cam = np.asarray(cam, dtype=np.float64)
    if cam.size == 0 or not np.isfinite(cam).all() or cam.max() <= cam.min():
        return False
    return bool(np.asarray(lesion_mask).reshape(-1)[int(np.argmax(cam))] > 0)


def energy_inside(cam: np.ndarray, lesion_mask: np.ndarray) -> float:
    """Fraction of the CAM's energy (sum of its non-negative values) inside the lesion; NaN for a zero map."""
    cam = np.clip(np.asarray(cam, dtype=np.float64), 0.0, None)
    total = cam.sum()
    if not np.isfinite(total) or total <= 0:
        return float("nan")
    return float(cam[np.asarray(lesion_mask) > 0].sum() / total)


def chance_level(lesion_mask: np.ndarray, breast_region: np.ndarray | None = None) -> float:
    """Area fraction of the lesion: the expected score of a map that knows nothing.

    A uniformly random maximum hits the lesion, and a flat map puts its energy inside it, with probability
    equal to the lesion's share of the region considered (the breast when given, otherwise the whole grid).
    """
    lesion = np.asarray(lesion_mask) > 0
    region = np.ones_like(lesion) if breast_region is None else np.asarray(breast_region) > 0
    area = region.sum()
    return float((lesion & region).sum() / area) if area else float("nan")


def patient_bootstrap_ci(
    values: np.ndarray,
    patient_ids: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict:
    """Mean of per-image values with a percentile CI from resampling patients with replacement.

    Images of one patient are correlated, so patients, not images, are the unit resampled (all of a drawn
    patient's images come along; :func:`mammo_utils.metrics.bootstrap_ci`). NaN values are left out first.

    Returns:
        ``{"estimate", "ci_low", "ci_high", "n", "n_patients"}`` (NaNs when no value is defined).
    """
    df = pd.DataFrame({"value": np.asarray(values, dtype=np.float64), "patient_id": np.asarray(patient_ids)})
    df = df[np.isfinite(df["value"])]
    if df.empty:
        nan = float("nan")
        return {"estimate": nan, "ci_low": nan, "ci_high": nan, "n": 0, "n_patients": 0}
    low, high = bootstrap_ci(df, lambda d: {"mean": float(d["value"].mean())}, n_resamples, level, seed)["mean"]
    return {
        "estimate": float(df["value"].mean()), "ci_low": low, "ci_high": high,
        "n": int(len(df)), "n_patients": int(df["patient_id"].astype(str).nunique()),
    }


def road_scores(
    model: torch.nn.Module,
    images: torch.Tensor,
    cams: np.ndarray,
    percentiles: tuple[int, ...] = ROAD_PERCENTILES,
    seed: int = 0,
    batch_size: int = 32,
) -> np.ndarray:
    """Per-image ROAD score (Rong et al. 2022; higher = more faithful), in logit units.

    ROAD removes the most (MoRF) and least (LeRF) relevant pixels, fills them with the library's noisy
    linear imputer and scores ``(ΔLeRF - ΔMoRF) / 2`` averaged over the percentiles, as the library's
    ``ROADCombined`` does. The Δs share the unperturbed score, which cancels; so this uses the library's
    perturbations (``RemoveLeastRelevantFirst`` / ``RemoveMostRelevantFirst`` with ``NoisyLinearImputer``)
    in ``ROADCombined``'s order and scores all perturbed images in a few batched forward passes instead of
    ``4 x len(percentiles)`` small ones (same numbers for the same seed). The imputer works on (C, H, W)
    tensors of any C: one-channel mammograms need no change.

    Two details: ``ClassifierOutputTarget(0)`` keeps the scores one number per image; and a tiny seeded
    jitter breaks ties in the maps, because the library thresholds with ``cam < percentile``: on a map
    with many zeros (common after Grad-CAM's ReLU) nothing would be kept, every pixel imputed and the
    sparse system singular (NaN). With the jitter, tied pixels are removed in random order.
    """
    device = next(model.parameters()).device
    rng = np.random.default_rng(seed)
    jittered = np.asarray(cams, dtype=np.float32) + 1e-6 * rng.random(np.shape(cams), dtype=np.float32)
    x = images.float().cpu()
    imputer = NoisyLinearImputer()
    torch.manual_seed(seed)  # the imputer's noise
    model.eval()
    after = {}
    for name, perturbation in (("lerf", RemoveLeastRelevantFirst), ("morf", RemoveMostRelevantFirst)):
        perturbed = torch.stack([
            perturbation(p, imputer)(x[i], torch.from_numpy(jittered[i])) for p in percentiles for i in range(len(x))
        ])
        with torch.no_grad():
            logits = torch.cat([model(b.to(device)) for b in perturbed.split(batch_size)])
        after[name] = logits[:, 0].double().cpu().numpy().reshape(len(percentiles), len(x)).mean(axis=0)
    return (after["lerf"] - after["morf"]) / 2


def _device(cfg: Config) -> torch.device:
    if cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return torch.device("cuda")
    return torch.device("cpu")


def _threshold(cfg: Config, init: str) -> float:
    """The evaluate stage's decision threshold for ``init`` when it wrote one; 0.5 otherwise."""
    path = paths.stage_dir(cfg, "evaluate", create=False) / "metrics.json"
    try:
        t = float(json.loads(path.read_text())["models"][init]["threshold"])
        return t if 0.0 <= t <= 1.0 else 0.5
    except (OSError, ValueError, KeyError, TypeError):
        return 0.5


def _test_predictions(cfg: Config, predictions: pd.DataFrame, init: str) -> pd.DataFrame:
    """Test label and mean probability per image for one init (configured protocol and label fraction if present)."""
    p = predictions[(predictions["split"].astype(str) == "test") & (predictions["init"].astype(str) == init)]
    # The model saved at <init>/model.pt is the headline run of cfg.task (other tasks' live in <init>-<task>/).
    p = headline_predictions(p, cfg.task)
    for column, wanted in (("protocol", cfg.finetune.protocol), ("label_fraction", cfg.finetune.label_fraction)):
        if column in p and len(p):
            match = p[column].astype(str) == str(wanted)
            if column == "label_fraction":
                match = np.isclose(pd.to_numeric(p[column], errors="coerce"), float(wanted))
            if match.any():
                p = p[match]
    p = p.assign(probability=pd.to_numeric(p["probability"], errors="coerce"))
    return p.groupby(p["image_id"].astype(str)).agg(label=("label", "first"), probability=("probability", "mean"))


def _load_lesion(path: str) -> np.ndarray | None:
    if not isinstance(path, str) or not path.strip():
        return None
    mask = np.load(path) > 0
    return mask if mask.any() else None


def run_explain(cfg: Config, force: bool = False) -> Path:
    """Stage 05: CAMs of every fine-tuned classifier on the test images, scored against the lesions.

    Reads ``01_data_preparation/preprocessed.csv``, ``03_fine_tuning/predictions.csv`` and
    ``03_fine_tuning/<init>/model.pt``; writes ``localization.json``, ``localization.png`` and, per init,
    ``overlays_<init>.png``, ``outcome_grid_<init>.png`` and ``original_overlay_<init>.png`` into
    ``05_gradcam/``. Skipped when those settings have not changed since the last run, unless ``force``.

    Returns:
        The stage folder.
    """
    from . import explain_figures as figures
    from .models import load_classifier

    out_dir = paths.stage_dir(cfg, "explain", create=False)
    key = cfg.section_hash(*SECTIONS)
    if not force and is_done(out_dir, key, ["localization.json"]):
        log.info("stage 05 is up to date in %s", out_dir)
        return out_dir
    images_df = pd.read_csv(paths.require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)
    predictions = pd.read_csv(paths.require(cfg, "finetune", "predictions.csv"), keep_default_na=False)
    paths.stage_dir(cfg, "explain")
    cpu_speedups(cfg)
    finetune_dir = paths.stage_dir(cfg, "finetune", create=False)
    inits = [i for i in cfg.finetune.inits if (finetune_dir / i / "model.pt").exists()]
    if not inits:
        raise CheckpointError(
            f"No classifier checkpoint ({', '.join(f'{i}/model.pt' for i in cfg.finetune.inits)}) in "
            f"{finetune_dir}. {paths.how_to_run(cfg, 'finetune')}"
        )
    test = images_df[images_df["split"].astype(str) == "test"].copy()
    if test.empty:
        raise DataError(f"No test images in preprocessed.csv. {paths.how_to_run(cfg, 'prepare')}")
    test["image_id"] = test["image_id"].astype(str)
    test = test.sort_values("image_id").reset_index(drop=True)
    device = _device(cfg)

    arrays = np.stack([np.load(p).astype(np.float32) for p in test["array_path"]])
    lesions = [_load_lesion(p) for p in test["lesion_path"]]
    with_lesion = [i for i, m in enumerate(lesions) if m is not None]
    rng = np.random.default_rng(cfg.seed)
    n_show = max(1, int(cfg.explain.n_images))
    overlay_idx = sorted(rng.permutation(with_lesion)[:n_show].tolist()) if with_lesion else []
    road_idx = sorted(rng.permutation(len(test))[: min(n_show, ROAD_MAX_IMAGES)].tolist())
    breasts = [ndimage.binary_fill_holes(a > 0) for a in arrays]
    chance = np.array([chance_level(lesions[i], breasts[i] if breasts[i].any() else None) for i in with_lesion])
    patients = test["patient_id"].astype(str).to_numpy()
    lesion_patients = patients[with_lesion]
    boot = dict(n_resamples=cfg.evaluate.bootstrap_resamples, seed=cfg.seed, level=cfg.evaluate.ci_level)

    result: dict = {
        "task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "image_size_px": cfg.image_size_px,
        "target_layer": "backbone.layer4[-1]", "methods": list(METHODS), "target": "logit of the positive class",
        "n_test_images": int(len(test)), "n_with_lesion": len(with_lesion),
        "chance_level": patient_bootstrap_ci(chance, lesion_patients, **boot),
        "road": {"percentiles": list(ROAD_PERCENTILES), "n_images": len(road_idx), "image_ids": [
            test["image_id"][i] for i in road_idx]},
        "settings": {"bootstrap_resamples": cfg.evaluate.bootstrap_resamples, "ci_level": cfg.evaluate.ci_level,
                     "seed": cfg.seed, "chance": "lesion area / breast area on the network input grid"},
        "inits": {},
    }
    per_image: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    x = torch.from_numpy(arrays[:, None])
    # CAMs only where something reads them: images with a lesion (scores, overlays), the ROAD sample and, for
    # Grad-CAM, the outcome grid's images. The other maps stay zero and are never used.
    scored = sorted(set(with_lesion) | set(road_idx))
    progress = tqdm(total=len(inits) * len(METHODS), desc="stage 05 CAMs",
                    disable=None if show_progress() else True)
    for init in inits:
        model, _ = load_classifier(finetune_dir / init / "model.pt", hint=paths.how_to_run(cfg, "finetune"))
        model = model.to(device)
        preds = _test_predictions(cfg, predictions, init).reindex(test["image_id"])
        threshold = _threshold(cfg, init)
        prob = preds["probability"].to_numpy(dtype=np.float64)
        # The task's label as stage 03 wrote it; the manifest's column where an image has no prediction.
        labels = pd.to_numeric(preds["label"], errors="coerce").to_numpy()
        if cfg.task in test:
            labels = np.where(np.isfinite(labels), labels, pd.to_numeric(test[cfg.task], errors="coerce"))
        grid = figures.outcome_grid_indices(labels, prob, threshold) if np.isfinite(prob).any() else []
        entry: dict = {"threshold": threshold, "methods": {}}
        per_image[init] = {}
        cams_by_method: dict[str, np.ndarray] = {}
        for method in METHODS:
            needed = sorted(set(scored) | (set(grid) if method == "gradcam" else set()))
            cams = np.zeros(arrays.shape, dtype=np.float32)
            if needed:
                cams[needed] = compute_cams(model, x[needed], method, batch_size=cfg.finetune.batch_size,
                                            device=device)
            cams_by_method[method] = cams
            hits = np.array([pointing_game(cams[i], lesions[i]) for i in with_lesion], dtype=np.float64)
            energy = np.array([energy_inside(cams[i], lesions[i]) for i in with_lesion], dtype=np.float64)
            road = road_scores(model, x[road_idx], cams[road_idx], seed=cfg.seed,
                               batch_size=cfg.finetune.batch_size)
            per_image[init][method] = {"hits": hits, "energy": energy}
            entry["methods"][method] = {
                "pointing_game": patient_bootstrap_ci(hits, lesion_patients, **boot),
                "energy_inside": patient_bootstrap_ci(energy, lesion_patients, **boot),
                "chance_level": float(np.nanmean(chance)) if len(chance) else float("nan"),
                "n": len(with_lesion),
                "road": {"mean": float(np.mean(road)) if len(road) else float("nan"), "n": int(len(road)),
                         "per_image": [float(v) for v in road]},
            }
            progress.update()
            log.info("%s %s: pointing game %.2f, energy inside %.2f", init, method,
                     entry["methods"][method]["pointing_game"]["estimate"],
                     entry["methods"][method]["energy_inside"]["estimate"])
        result["inits"][init] = entry
        figures.plot_overlays(arrays, cams_by_method, lesions, overlay_idx, test["image_id"].tolist(),
                              out_dir / f"overlays_{init}.png", title=f"{init} classifier")
        if np.isfinite(prob).any():
            figures.plot_outcome_grid(arrays, cams_by_method["gradcam"], lesions, labels, prob, threshold,
                                      test["image_id"].tolist(), out_dir / f"outcome_grid_{init}.png",
                                      title=f"{init} classifier, Grad-CAM, threshold {threshold:.2f}")
        else:
            log.warning("No test predictions for init %r; outcome grid skipped.", init)
        if overlay_idx:
            i = overlay_idx[0]
            figures.plot_original_overlay(arrays[i], cams_by_method["gradcam"][i], lesions[i],
                                          Transform.from_dict(test.iloc[i].to_dict()),
                                          out_dir / f"original_overlay_{init}.png", title=test["image_id"][i])
    progress.close()
    result["comparison"] = _compare(per_image, lesion_patients, boot)
    figures.plot_localization(result, out_dir / "localization.png")
    paths.atomic_write_json(out_dir / "localization.json", _finite_or_none({**result, **provenance(cfg)}))
    mark_done(out_dir, key, cfg, inits=inits)
    from .report import write_report

    write_report(cfg)  # the run's report gains the localization table
    log.info("Explanations written to %s", out_dir)
    return out_dir


def _compare(per_image: dict, patient_ids: np.ndarray, boot: dict) -> dict | None:
    """SimCLR minus random init (paired: the same test images), per method, with patient-bootstrap CIs."""
    if not {"simclr", "random"} <= set(per_image):
        return None
    out: dict = {"a": "simclr", "b": "random", "methods": {}}
    for method in METHODS:
        a, b = per_image["simclr"][method], per_image["random"][method]
        out["methods"][method] = {
            f"{name}_difference": patient_bootstrap_ci(a[key] - b[key], patient_ids, **boot)
            for name, key in (("pointing_game", "hits"), ("energy_inside", "energy"))
        }
    return out


def _finite_or_none(obj):
    """JSON has no NaN: undefined numbers become null."""
    if isinstance(obj, dict):
        return {k: _finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite_or_none(v) for v in obj]
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    return obj


def load_localization(cfg: Config) -> dict:
    """The ``localization.json`` written by :func:`run_explain` (clear error when the stage has not run)."""
    return json.loads(paths.require(cfg, "explain", "localization.json").read_text())
