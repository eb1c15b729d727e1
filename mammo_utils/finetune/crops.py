"""Stage 03's crop task: does self-supervised pretraining help where labels are few?

The classifiers learn "is there a lesion in this crop?" (:mod:`mammo_utils.prepare.crops`) from a fraction of the
training women's labels (``finetune.label_fractions``: the women drawn stratified and nested by
:func:`~mammo_utils.prepare.split.subsample_patients`, ``finetune.draws`` draws per fraction below 100%), and are
tested on women no model of the split has seen, not even unlabelled:

- **held-out split** (the manifest's train / val / test), or, where the run cross-validates (MIAS), **every fold**
  (fold k tests, k + 1 validates, the rest train; the self-supervised backbone is the one pretrained on that fold's
  training women only);
- **classifiers**: the linear probe on frozen features (:mod:`mammo_utils.finetune.linear`) from every
  initialisation and from the baselines (the crop's pixels, its mean, its standard deviation, both: a single
  statistic can carry a crop task, and a learnt feature must beat it to mean anything); and full fine-tuning
  (:mod:`mammo_utils.finetune.full`) from each initialisation at ``finetune.full_fractions``;
- **whole films from crops**: the fully fine-tuned crop classifier of all the labels reads every film of the
  validation and test women crop by crop (a tiling of the breast) and the film's score is its highest crop's, as
  Shen et al. (2019) built whole-image classifiers from patch classifiers.

Every prediction is written (``crop_predictions.csv``, ``film_predictions.csv``); stage 04 turns them into the
gain table, ``ssl_gain.json``, with paired patient-bootstrap intervals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from scipy.special import expit

from mammo_utils.config import Config
from mammo_utils.finetune.augment import finetune_transform
from mammo_utils.finetune.backbones import BackboneCache
from mammo_utils.finetune.full import fit_full
from mammo_utils.finetune.linear import extract_features, fit_linear_heads, head_probabilities
from mammo_utils.models import predict
from mammo_utils.prepare.crops import baseline_features, cut, labelled_women, tile_centres
from mammo_utils.prepare.loaders import CachedImages
from mammo_utils.prepare.split import cross_validation_split, uses_cross_validation
from mammo_utils.prepare.stage import load_crops, load_hires
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_text
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import seed_everything

log = logging.getLogger(__name__)

BASELINES = ("pixels", "mean_sd", "mean", "sd")  # features of a crop that no network computed
FILM_COLUMNS = ["image_id", "patient_id", "split", "cv_fold", "label", "probability", "init", "classifier",
                "label_fraction"]
PREDICTION_COLUMNS = ["crop_id", "image_id", "patient_id", "split", "cv_fold", "label", "init", "classifier",
                      "label_fraction", "draw", "probability"]


@dataclass(frozen=True)
class CropSplit:
    """One train / validation / test division of the crops by woman: the held-out split (``cv_fold`` None) or
    one cross-validation fold."""

    cv_fold: int | None
    train: np.ndarray  # boolean masks over the crop table
    val: np.ndarray
    test: np.ndarray


def crop_splits(crops: pd.DataFrame, cfg: Config, cross_validate: bool) -> list[CropSplit]:
    """The held-out split, or every fold of the cross-validation by woman (the manifest's ``fold`` column)."""
    if not cross_validate:
        return [CropSplit(None, *(crops.split.to_numpy() == s for s in ("train", "val", "test")))]
    out = []
    for k in range(cfg.split.n_folds):
        split = cross_validation_split(crops, k, cfg.split.n_folds).split.to_numpy()
        out.append(CropSplit(k, split == "train", split == "val", split == "test"))
    return out


def draws(cfg: Config, fraction: float, classifier: str) -> list[int]:
    """The draws of labelled women at ``fraction``: one at 100% (every woman), else ``finetune.draws`` (linear)
    or ``finetune.full_draws`` (full fine-tuning, the costly one)."""
    if fraction >= 1:
        return [cfg.seed]
    n = cfg.finetune.draws if classifier == "linear" else cfg.finetune.full_draws
    return [cfg.seed + d for d in range(max(1, n))]


def fit_probes(features: torch.Tensor, labels: np.ndarray, fits: list[np.ndarray], val: np.ndarray, cfg: Config,
               seeds: list[int]) -> list[torch.nn.Linear | None]:
    """Linear probes on ``features[fit]`` for each boolean mask of ``fits`` (seeded with ``seeds``), trained side by
    side (:func:`~mammo_utils.finetune.linear.fit_linear_heads`); None where the labelled crops hold one class."""
    labels = np.asarray(labels)
    usable = [k for k, fit in enumerate(fits) if len(np.unique(labels[fit])) == 2]
    heads: list[torch.nn.Linear | None] = [None] * len(fits)
    if not usable:
        return heads
    union = np.logical_or.reduce([fits[k] for k in usable])
    y, f = torch.as_tensor(labels.copy()), cfg.finetune
    probes = fit_linear_heads(features[union], y[union], torch.from_numpy(np.stack([fits[k][union] for k in usable])),
                              features[val], y[val], epochs=f.linear_epochs, lr=f.linear_lr,
                              weight_decay=f.weight_decay, seeds=[seeds[k] for k in usable])
    for k, probe in zip(usable, probes, strict=True):
        heads[k] = probe.head
    return heads


def prediction_rows(crops: pd.DataFrame, split: CropSplit, probability: np.ndarray, **columns) -> pd.DataFrame:
    """The validation and test rows of one classifier (its ``probability`` for every crop of the table)."""
    rows = []
    for name, mask in (("val", split.val), ("test", split.test)):
        part = crops[mask]
        rows.append(pd.DataFrame({"crop_id": part.crop_id.values, "image_id": part.image_id.values,
                                  "patient_id": part.patient_id.values, "split": name,
                                  "cv_fold": -1 if split.cv_fold is None else split.cv_fold,
                                  "label": part.label.values, "probability": probability[mask], **columns}))
    return pd.concat(rows, ignore_index=True)


def linear_predictions(crops: pd.DataFrame, features: dict[str, torch.Tensor], split: CropSplit,
                       cfg: Config) -> pd.DataFrame:
    """Every linear probe of one split: each feature set (initialisations and baselines) x fraction x draw."""
    labels, frames = crops.label.to_numpy(), []
    plan = [(fraction, draw) for fraction in cfg.finetune.label_fractions for draw in draws(cfg, fraction, "linear")]
    fits = [labelled_women(crops, split.train, fraction, draw) for fraction, draw in plan]
    for name, feats in features.items():
        heads = fit_probes(feats, labels, fits, split.val, cfg, [draw for _, draw in plan])
        for (fraction, draw), head in zip(plan, heads, strict=True):
            p = head_probabilities(head, feats) if head is not None else np.full(len(crops), 0.5)
            frames.append(prediction_rows(crops, split, p, init=name, classifier="linear",
                                          label_fraction=float(fraction), draw=draw))
    return pd.concat(frames, ignore_index=True)


def fine_tune(crops: pd.DataFrame, arrays: torch.Tensor, backbone: torch.nn.Module, split: CropSplit,
              fraction: float, draw: int, init: str, cfg: Config):
    """Full fine-tuning of ``Classifier(backbone)`` on the labelled training crops (``finetune.crop_steps`` steps),
    the weights chosen on the validation crops. Returns the fitted result, or None with one class only."""
    fit = labelled_women(crops, split.train, fraction, draw)
    labels = torch.as_tensor(crops.label.to_numpy().copy())
    if len(np.unique(labels[fit].numpy())) < 2:
        return None
    seed_everything(draw)
    train = CachedImages.from_arrays(arrays[fit], labels[fit], finetune_transform(cfg.crops.size_px, cfg.augment))
    val = CachedImages.from_arrays(arrays[split.val], labels[split.val])
    factor = 1.0 if init == "random" else cfg.finetune.backbone_lr_factor
    return fit_full(cfg, backbone, train, val, cfg.finetune.crop_steps, n_checks=cfg.finetune.epochs, seed=draw,
                    backbone_lr_factor=factor)


def film_scores(model: torch.nn.Module, films: dict[str, np.ndarray], image_ids: list[str], cfg: Config,
                stride_px: int | None = None) -> np.ndarray:
    """Each film's score: the highest probability the crop classifier gives any crop of a tiling of its breast
    (every ``stride_px``, half a crop by default). The maximum is taken over the logits and turned into a
    probability in float64: a confident classifier gives many crops a float32 probability of exactly 1 (past a
    logit of about 17), and films that tie there could not be ranked; float64 keeps them apart up to about 36."""
    size = cfg.crops.size_px
    stride = stride_px or size // 2
    tiles, owner = [], []
    for k, image_id in enumerate(image_ids):
        film = films[image_id]
        centres = tile_centres(film, size, stride) or [(film.shape[1] // 2, film.shape[0] // 2)]
        tiles += [cut(film, x, y, size) for x, y in centres]
        owner += [k] * len(centres)
    if not tiles:
        return np.zeros(0)
    z = predict(model, torch.from_numpy(np.stack(tiles).astype(np.float32))[:, None], placement(cfg), batch_size=256,
                logits=True)
    top = pd.Series(z.astype(np.float64)).groupby(np.asarray(owner)).max().reindex(range(len(image_ids)))
    return expit(top.to_numpy())


def split_films(index: pd.DataFrame, split: CropSplit, cfg: Config) -> dict[str, pd.DataFrame]:
    """The validation and test films of a split (the held-out split's, or fold k's and k + 1's)."""
    if split.cv_fold is not None:
        index = cross_validation_split(index, split.cv_fold, cfg.split.n_folds)
    return {name: index[index.split == name] for name in ("val", "test")}


def film_rows(films: dict[str, pd.DataFrame], scores: dict[str, np.ndarray], split: CropSplit,
              **columns) -> pd.DataFrame:
    """``film_predictions.csv`` rows: every validation and test film with its highest-crop score."""
    return pd.concat([pd.DataFrame({
        "image_id": part.image_id.astype(str).values, "patient_id": part.patient_id.astype(str).values,
        "split": name, "cv_fold": -1 if split.cv_fold is None else split.cv_fold,
        "label": part.abnormal.astype(int).values, "probability": scores[name], **columns})
        for name, part in films.items()], ignore_index=True)


def split_name(split: CropSplit) -> str:
    return "heldout" if split.cv_fold is None else f"cv{split.cv_fold}"


def run_split(cfg: Config, run: StageRun, crops: pd.DataFrame, arrays: np.ndarray, index: pd.DataFrame,
              backbones: BackboneCache, split: CropSplit, inits: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every classifier of one split of the crop task, and the whole films read by its crop classifiers; written to
    ``03_finetune/crops/<split>/`` (or read back when that split already finished with the same settings)."""
    folder = run.folder / "crops" / split_name(split)
    if run.part_done(folder, ["predictions.csv", "films.csv"]):
        read = {"dtype": {"crop_id": str, "image_id": str, "patient_id": str}, "keep_default_na": False}
        return pd.read_csv(folder / "predictions.csv", **read), pd.read_csv(folder / "films.csv", **read)
    seed = cfg.seed
    images = torch.from_numpy(np.asarray(arrays))[:, None]
    features = {init: extract_features(backbones.backbone(init, split.cv_fold, seed), images, placement(cfg),
                                       batch_size=256) for init in inits}
    features.update({name: baseline_features(arrays, name) for name in BASELINES})
    frames = [linear_predictions(crops, features, split, cfg)] if "linear" in cfg.finetune.classifiers else []
    films, film_frames = split_films(index, split, cfg), []
    hires = load_hires(pd.concat(films.values()))
    for init in inits if "full" in cfg.finetune.classifiers else []:
        for fraction in cfg.finetune.full_fractions:
            for draw in draws(cfg, fraction, "full"):
                backbone = backbones.backbone(init, split.cv_fold, seed)
                result = fine_tune(crops, images, backbone, split, fraction, draw, init, cfg)
                p = predict(result.model, images, placement(cfg), batch_size=256) if result else np.full(len(crops), .5)
                frames.append(prediction_rows(crops, split, p, init=init, classifier="full",
                                              label_fraction=float(fraction), draw=draw))
                if result is not None and fraction >= 1:  # the crop classifier of all the labels reads whole films
                    scores = {k: film_scores(result.model, hires, part.image_id.astype(str).tolist(), cfg)
                              for k, part in films.items()}
                    film_frames.append(film_rows(films, scores, split, init=init, classifier="full",
                                                 label_fraction=1.0))
    predictions = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PREDICTION_COLUMNS)
    film_table = pd.concat(film_frames, ignore_index=True) if film_frames else pd.DataFrame(columns=FILM_COLUMNS)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "predictions.csv", predictions.to_csv(index=False))
    atomic_write_text(folder / "films.csv", film_table.to_csv(index=False))
    run.mark_part_done(folder)
    return predictions, film_table


def run_crop_task(cfg: Config, run: StageRun, index: pd.DataFrame, backbones: BackboneCache, inits: list[str],
                  progress=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The crop task on every split (the held-out one, or each cross-validation fold); returns all the crop
    predictions and all the whole-film predictions."""
    crops, arrays = load_crops(cfg)
    if not cfg.finetune.classifiers:
        return pd.DataFrame(columns=PREDICTION_COLUMNS), pd.DataFrame(columns=FILM_COLUMNS)
    if crops.label.nunique() < 2:
        log.warning("no crop task: %s has no located finding (crops.csv holds one class only)", cfg.dataset)
        return pd.DataFrame(columns=PREDICTION_COLUMNS), pd.DataFrame(columns=FILM_COLUMNS)
    splits = crop_splits(crops, cfg, uses_cross_validation(cfg))
    frames, film_frames = [], []
    for split in splits:
        if progress is not None:
            progress(f"crop task, {split_name(split)}: linear probes and full fine-tuning from {', '.join(inits)}")
        p, f = run_split(cfg, run, crops, arrays, index, backbones, split, inits)
        frames.append(p)
        film_frames.append(f)
    return pd.concat(frames, ignore_index=True), pd.concat(film_frames, ignore_index=True)
