"""The recipe search: which pretraining settings give features that help where labels are few, measured on
validation women only.

Every variant is the run's own pretraining (stage 02's settings, ``pretrain.steps`` steps) with one thing changed
(:data:`VARIANTS`): the temperature, a view transformation left out, the views' crop scale, the batch size, MoCo's
queue in place of SimCLR's in-batch negatives. The test women never enter: each variant pretrains on the films of
the manifest's training and validation women, and its frozen features are read by the crop task's linear probe,
cross-validated by woman among those same women (5 folds of the manifest's ``fold`` column: fold k scored, k + 1
chooses the probe's epoch, the rest train), at 5, 10, 25 and 100% of the training women (``finetune.draws`` draws
of women below 100%). A variant's score at a fraction is the ROC AUC of the held-out crops of all folds pooled, its
mean ± SD over the draws. Beside them: the same network untrained (every variant's starting point, seeded alike)
and the three baselines that need no network (the crop's pixels, its mean and SD, its SD alone).

Each row also says whether its network learned its own task: the last epoch's NT-Xent loss beside ln(2N - 1)
(ln(K + 1) for MoCo), and the pretext accuracy. ``python -m mammo_utils recipe`` (``make recipe DATASET=mias``)
writes ``runs/<profile>-<dataset>/recipe/`` (``recipe_search.csv``, ``recipe.json``; one folder per variant,
skipped when it already finished with the same settings, so an interrupted search resumes at the variant it
stopped in). ``publish`` copies both to ``docs/results/<profile>-<dataset>/``, where the README's table is read.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mammo_utils.config import Config, _apply_override
from mammo_utils.evaluate.metrics import auc_or_half
from mammo_utils.finetune.crops import crop_splits, fit_probes
from mammo_utils.finetune.linear import extract_features, head_probabilities
from mammo_utils.prepare.crops import baseline_features, labelled_women
from mammo_utils.prepare.stage import load_crops, load_index
from mammo_utils.pretrain.stage import build_module, knn_monitor, read_history, regions_loader
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_json, atomic_write_text
from mammo_utils.runs.paths import run_dir
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.trainer import Progress, fresh_start, make_trainer, seed_everything

log = logging.getLogger(__name__)

FRACTIONS = (0.05, 0.1, 0.25, 1.0)
COLUMNS = ["variant", "change", "method", "steps", "batch", "temperature", "loss", "loss_constant_output",
           "pretext_top1", "knn_untrained", "knn"]
BASELINE_ROWS = (("pixels", "raw pixels (no network)"), ("mean_sd", "crop mean and SD (no network)"),
                 ("sd", "crop SD alone (no network)"))


@dataclass(frozen=True)
class Variant:
    """One row of the search: a name, what it changes, and the settings that change (``SECTION.NAME=VALUE``)."""

    name: str
    change: str
    overrides: tuple[str, ...] = ()


VARIANTS: tuple[Variant, ...] = (
    Variant("base", "the demo's recipe: ResNet-18, batch 128, τ 0.2, flips, intensity, blur, noise"),
    Variant("tau 0.1", "temperature 0.1 (lightly's SimCLR benchmarks)", ("pretrain.temperature=0.1",)),
    Variant("tau 0.5", "temperature 0.5 (lightly's NTXentLoss default)", ("pretrain.temperature=0.5",)),
    Variant("no blur", "without Gaussian blur", ("views.blur_prob=0",)),
    Variant("no intensity", "without gamma, contrast and brightness changes",
            ("views.brightness=0", "views.contrast=0", "views.gamma=1,1")),
    Variant("no flips", "without flips and quarter turns",
            ("views.hflip_prob=0", "views.vflip_prob=0", "views.rot90_prob=0")),
    Variant("wide crops", "views keep 8-100% of the region (SimCLR's ImageNet scale)", ("views.scale=0.08,1",)),
    Variant("tight crops", "views keep 60-100% of the region", ("views.scale=0.6,1",)),
    Variant("batch 64", "batch 64 (2N − 1 = 127 candidates), the same steps", ("pretrain.batch_size=64",)),
    Variant("moco, batch 64", "MoCo v2 at batch 64: a queue of 4,096 negatives, a momentum encoder",
            ("pretrain.method=moco", "pretrain.batch_size=64")),
)


def variant_config(cfg: Config, variant: Variant) -> Config:
    """``cfg`` with the variant's settings."""
    for item in variant.overrides:
        key, value = item.split("=", 1)
        cfg = _apply_override(cfg, key, value)
    return cfg


def probe_curve(features: torch.Tensor, crops: pd.DataFrame, cfg: Config,
                fractions: tuple[float, ...] = FRACTIONS) -> dict[float, list[float]]:
    """The linear probe's ROC AUC at each fraction of the training women, one per draw: each crop is scored by the
    probe of the fold that holds it out, and the AUC is over all folds' held-out crops."""
    labels, splits = crops.label.to_numpy(), crop_splits(crops, cfg, True)
    plan = [(f, d) for f in fractions for d in ([cfg.seed] if f >= 1 else
                                               [cfg.seed + i for i in range(max(1, cfg.finetune.draws))])]
    scores = np.full((len(plan), len(crops)), np.nan)
    for split in splits:
        fits = [labelled_women(crops, split.train, f, d) for f, d in plan]
        heads = fit_probes(features, labels, fits, split.val, cfg, [d for _, d in plan])
        for k, head in enumerate(heads):
            scores[k, split.test] = head_probabilities(head, features[split.test]) if head is not None else 0.5
    out: dict[float, list[float]] = {}
    for (f, _), s in zip(plan, scores, strict=True):
        out.setdefault(f, []).append(auc_or_half(labels, s))
    return out


def _row(name: str, change: str, curve: dict[float, list[float]], **extra) -> dict:
    row = {"variant": name, "change": change, **extra}
    for f, aucs in curve.items():
        row[f"auc_{round(f * 100)}pct"] = round(float(np.mean(aucs)), 4)
    for f, aucs in curve.items():
        row[f"sd_{round(f * 100)}pct"] = round(float(np.std(aucs)), 4)
    return row


def run_variant(cfg: Config, variant: Variant, crops: pd.DataFrame, images: torch.Tensor, arrays: np.ndarray,
                films: pd.DataFrame, train: pd.DataFrame, val: pd.DataFrame, folder: Path) -> dict:
    """Pretrain one variant on ``films`` and score its features (read back when it already finished)."""
    vcfg = variant_config(cfg, variant)
    done = folder / "result.json"
    key = {"overrides": list(variant.overrides), "pretrain": vcfg.to_dict()["pretrain"],
           "views": vcfg.to_dict()["views"], "backbone": vcfg.backbone, "seed": vcfg.seed,
           "films": sorted(films.image_id.astype(str))}
    key = json.loads(json.dumps(key))  # as it reads back (tuples become lists)
    if done.exists():
        previous = json.loads(done.read_text())
        if previous.get("key") == key:
            return previous["row"]
    folder.mkdir(parents=True, exist_ok=True)
    seed_everything(vcfg.seed)
    module = build_module(vcfg)
    module.monitor = knn_monitor(vcfg, crops, arrays, train, val)
    untrained = module.monitor.score(module.backbone)
    fresh_start(folder)
    trainer = make_trainer(vcfg, folder, max_epochs=vcfg.pretrain.epochs)
    trainer.fit(module, regions_loader(vcfg, films))
    history = read_history(folder, untrained, vcfg.pretrain.steps // max(1, vcfg.pretrain.epochs))
    atomic_write_text(folder / "history.csv", history.to_csv(index=False))
    last = history.iloc[-1]
    features = extract_features(module.backbone, images, placement(vcfg), batch_size=256)
    row = _row(variant.name, variant.change, probe_curve(features, crops, vcfg), method=vcfg.pretrain.method,
               steps=int(trainer.global_step), batch=vcfg.pretrain.batch_size, temperature=vcfg.pretrain.temperature,
               loss=round(float(last.loss), 3), loss_constant_output=round(float(last.loss_constant_output), 3),
               pretext_top1=round(float(last.pretext_top1), 3), knn_untrained=round(float(untrained), 3),
               knn=round(float(last.knn), 3))
    atomic_write_json(done, {"key": key, "row": row})
    return row


def run_recipe(cfg: Config, names: list[str] | None = None) -> Path:
    """The recipe search (every variant of :data:`VARIANTS`, or those named) into ``runs/<run>/recipe/``."""
    variants = [v for v in VARIANTS if names is None or v.name in names]
    out = run_dir(cfg) / "recipe"
    out.mkdir(parents=True, exist_ok=True)
    index = load_index(cfg)
    crops, arrays = load_crops(cfg)
    women = set(index.loc[index.split != "test", "patient_id"].astype(str))  # the test women never enter
    keep = crops.patient_id.astype(str).isin(women).to_numpy()
    crops, arrays = crops[keep].reset_index(drop=True), arrays[keep]
    films = index[index.split != "test"]
    train, val = index[index.split == "train"], index[index.split == "val"]
    images = torch.from_numpy(np.asarray(arrays))[:, None]
    rows = [_row(name, change, probe_curve(baseline_features(arrays, name), crops, cfg), steps=0)
            for name, change in BASELINE_ROWS]
    seed_everything(cfg.seed)
    untrained = build_module(cfg).backbone  # every variant starts from these weights
    rows.append(_row("random init", f"untrained {cfg.backbone}", probe_curve(
        extract_features(untrained, images, placement(cfg), batch_size=256), crops, cfg), steps=0,
        batch=cfg.pretrain.batch_size, temperature=cfg.pretrain.temperature,
        loss_constant_output=round(math.log(2 * cfg.pretrain.batch_size - 1), 3)))
    progress = Progress("recipe search", [1.0] * len(variants))
    for i, variant in enumerate(variants):
        progress.begin(i, f"{variant.name}: {variant.change}")
        rows.append(run_variant(cfg, variant, crops, images, arrays, films, train, val,
                                out / variant.name.replace(" ", "_").replace(",", "")))
    progress.end()
    table = pd.DataFrame(rows)
    table = table[[c for c in COLUMNS if c in table] + [c for c in table if c not in COLUMNS]]
    atomic_write_text(out / "recipe_search.csv", table.to_csv(index=False))
    atomic_write_json(out / "recipe.json", {
        "dataset": cfg.dataset, "backbone": cfg.backbone, "steps": cfg.pretrain.steps,
        "n_women": len(women), "n_crops": len(crops), "fractions": list(FRACTIONS), "draws": cfg.finetune.draws,
        "rows": rows, **provenance(cfg)})
    return out
