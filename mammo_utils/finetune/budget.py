"""The budget curve: what the crop task's linear probe scores after 0, 250, 500, 1,000, 2,000 ... pretraining steps.

One SimCLR run on the manifest's training women (stage 02's main run, longer), whose backbone is read at each listed
step: a linear probe on the frozen features of the training women's labelled crops (all of them, and a tenth of the
women over several draws) is scored on the validation women and on the test women, with patient-bootstrap 95%
intervals, beside the baselines that need no network (the crop's pixels, mean and SD). Step 0 is the random
initialisation. The learning rate follows one warm-up and cosine decay over the whole run, so the backbone at step
500 of a 2,000-step run is not the one a 500-step run ends with: the curve says what more steps buy, not what each
budget's own schedule would give. ``python -m mammo_utils budget`` (``make budget DATASET=mias``) runs it; it reads
stages 01 and 02's settings and writes ``runs/<profile>-<dataset>/budget/`` (``budget.json``, ``budget.csv``,
``budget.png``).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch

from mammo_utils.config import Config
from mammo_utils.evaluate.metrics import metrics_with_ci
from mammo_utils.finetune import figures
from mammo_utils.finetune.crops import BASELINES, fit_probes
from mammo_utils.finetune.linear import extract_features, head_probabilities
from mammo_utils.prepare.crops import baseline_features, labelled_women
from mammo_utils.prepare.stage import load_crops, load_index
from mammo_utils.pretrain.stage import build_module, pretraining_images, regions_loader
from mammo_utils.runs.devices import placement
from mammo_utils.runs.files import atomic_write_json, atomic_write_text
from mammo_utils.runs.paths import run_dir
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.trainer import fresh_start, make_trainer, seed_everything

log = logging.getLogger(__name__)

DEFAULT_STEPS = (0, 250, 500, 1000, 2000)
FEW = 0.1  # the "few labels" point of the curve: a tenth of the training women


class Snapshots(pl.Callback):
    """Frozen features of the labelled crops at the listed optimisation steps (step 0 before training)."""

    def __init__(self, steps: tuple[int, ...], crops: torch.Tensor, where) -> None:
        self.steps, self.crops, self.where, self.features = set(steps), crops, where, {}

    def take(self, module: pl.LightningModule, step: int) -> None:
        was = module.backbone.training
        import copy

        self.features[step] = extract_features(copy.deepcopy(module.backbone), self.crops, self.where, batch_size=256)
        module.backbone.train(was)
        log.info("budget curve: features of %d crops at step %d", len(self.crops), step)

    def on_train_start(self, trainer: pl.Trainer, module: pl.LightningModule) -> None:
        if 0 in self.steps:
            self.take(module, 0)

    def on_train_batch_end(self, trainer: pl.Trainer, module: pl.LightningModule, *args) -> None:
        if trainer.global_step in self.steps and trainer.global_step not in self.features:
            self.take(module, trainer.global_step)


def probe_scores(features: torch.Tensor, crops: pd.DataFrame, cfg: Config, name: str, step: int) -> list[dict]:
    """Validation and test ROC AUC [95% CI] of the linear probe on ``features``: all the training women's labels,
    and a tenth of the women (the mean over ``finetune.draws`` draws)."""
    train, val = (crops.split == "train").to_numpy(), (crops.split == "val").to_numpy()
    labels, rows = crops.label.to_numpy(), []
    for fraction in (1.0, FEW):
        draws = [cfg.seed] if fraction >= 1 else [cfg.seed + d for d in range(cfg.finetune.draws)]
        heads = fit_probes(features, labels, [labelled_women(crops, train, fraction, d) for d in draws], val, cfg,
                           draws)
        scores = [head_probabilities(h, features) if h is not None else np.full(len(crops), 0.5) for h in heads]
        for split in ("val", "test"):
            part = crops[crops.split == split]
            aucs = [metrics_with_ci(part.assign(probability=s[(crops.split == split).to_numpy()]), 0.5,
                                    cfg.evaluate.bootstrap_resamples, cfg.evaluate.ci_level, cfg.seed)["roc_auc"]
                    for s in scores]
            rows.append({"init": name, "step": step, "label_fraction": fraction, "split": split,
                         "roc_auc": float(np.mean([a["value"] for a in aucs])),
                         "ci_low": float(np.mean([a["low"] for a in aucs])),
                         "ci_high": float(np.mean([a["high"] for a in aucs])), "n_draws": len(draws),
                         "n_women": int(part.patient_id.nunique())})
    return rows


def run_budget(cfg: Config, steps: tuple[int, ...] = DEFAULT_STEPS) -> Path:
    """Pretrain ``max(steps)`` steps on the training women, read the backbone at every listed step, and write the
    budget curve (``budget.json``, ``budget.csv``, ``budget.png``) into ``runs/<profile>-<dataset>/budget/``."""
    steps = tuple(sorted({int(s) for s in steps}))
    out = run_dir(cfg) / "budget"
    work = out / "training"
    work.mkdir(parents=True, exist_ok=True)
    index = load_index(cfg)
    crops, arrays = load_crops(cfg)
    images = torch.from_numpy(np.asarray(arrays))[:, None]
    train, _ = pretraining_images(index)
    run_cfg = replace(cfg, pretrain=replace(cfg.pretrain, steps=max(steps[-1], 1), epochs=max(1, len(steps) - 1)))
    seed_everything(cfg.seed)
    module = build_module(run_cfg)
    snapshots = Snapshots(steps, images, placement(cfg))
    fresh_start(work)
    trainer = make_trainer(run_cfg, work, max_steps=max(steps[-1], 1), callbacks=[snapshots])
    if steps[-1] > 0:
        trainer.fit(module, regions_loader(run_cfg, train))
    else:
        snapshots.take(module, 0)
    rows = [r for step, feats in sorted(snapshots.features.items())
            for r in probe_scores(feats, crops, cfg, cfg.pretrain.method, step)]
    for name in BASELINES:
        rows += probe_scores(baseline_features(arrays, name), crops, cfg, name, -1)
    table = pd.DataFrame(rows)
    atomic_write_text(out / "budget.csv", table.to_csv(index=False))
    atomic_write_json(out / "budget.json", {"dataset": cfg.dataset, "backbone": cfg.backbone,
                                            "batch_size": cfg.pretrain.batch_size, "steps": list(steps),
                                            "rows": rows, **provenance(cfg)})
    figures.budget_curve(table, out / "budget.png", title=f"{cfg.dataset}: linear probe on frozen features")
    return out
