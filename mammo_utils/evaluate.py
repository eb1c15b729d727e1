"""Stage 04: metrics with patient-level 95% CIs on the held-out split, figures, and the results table."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from . import plots
from .config import Config
from .metrics import choose_threshold, metrics_with_ci, roc_band
from .paths import atomic_write_json, require, stage_dir
from .report import write_report
from .stage import is_done, mark_done, provenance

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "synthetic", "augment", "pretrain", "finetune",
            "evaluate", "precision")
PAPER_CLAIM = {"accuracy": 0.967, "source": "Saeed & Naveed, arXiv 2509.20474 (2025)",
               "note": "one accuracy for INbreast and MIAS; task, split and label fraction not stated"}


def evaluate_predictions(predictions: pd.DataFrame, cfg: Config) -> dict:
    """Metrics per model (init): threshold from validation, every metric on test with its CI."""
    models = {}
    for init, df in predictions.groupby("init", sort=False):
        val, test = df[df.split == "val"], df[df.split == "test"]
        threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
        models[str(init)] = {
            "threshold": threshold,
            "threshold_rule": "Youden's J on the validation split",
            "n_test_images": int(len(test)),
            "n_test_patients": int(test["patient_id"].nunique()),
            "n_test_positive": int(test["label"].sum()),
            "metrics": metrics_with_ci(test, threshold, cfg.evaluate.bootstrap_resamples, cfg.evaluate.ci_level,
                                       cfg.seed),
        }
    return models


def run_evaluate(cfg: Config, force: bool = False) -> Path:
    """Write ``metrics.json``, ``roc.png``, ``confusion.png`` and the run's ``report.md``."""
    out = stage_dir(cfg, "evaluate", create=False)
    key = cfg.section_hash(*SECTIONS)
    if not force and is_done(out, key, ["metrics.json"]):
        log.info("stage 04 is up to date in %s", out)
        return out
    predictions = pd.read_csv(require(cfg, "finetune", "predictions.csv"), keep_default_na=False)
    stage_dir(cfg, "evaluate")
    models = evaluate_predictions(predictions, cfg)
    curves, bands, matrices = {}, {}, {}
    for init, df in predictions.groupby("init", sort=False):
        test = df[df.split == "test"]
        if test["label"].nunique() < 2:
            continue
        fpr, tpr, _ = roc_curve(test["label"], test["probability"])
        curves[str(init)] = (fpr, tpr, float(roc_auc_score(test["label"], test["probability"])))
        bands[str(init)] = roc_band(test, n_resamples=min(200, cfg.evaluate.bootstrap_resamples), seed=cfg.seed)
        pred = (test["probability"] >= models[str(init)]["threshold"]).astype(int)
        matrices[str(init)] = confusion_matrix(test["label"], pred, labels=[0, 1])
    if curves:
        plots.roc_curves(curves, out / "roc.png", bands)
    if matrices:
        names = ("no finding", "finding") if cfg.task == "abnormal" else ("not cancer", "cancer")
        plots.confusion_matrices(matrices, out / "confusion.png", names)
    metrics = {"task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "split": "test",
               "ci_level": cfg.evaluate.ci_level, "bootstrap_resamples": cfg.evaluate.bootstrap_resamples,
               "ci_unit": "patient", "models": models, "paper_claim": PAPER_CLAIM, **provenance(cfg)}
    atomic_write_json(out / "metrics.json", metrics)
    write_report(cfg)
    mark_done(out, key, cfg)
    return out


def results_frame(metrics: dict) -> pd.DataFrame:
    """One row per model: each metric as 'value [low, high]'."""
    rows = []
    for init, m in metrics["models"].items():
        row = {"init": init}
        for name, v in m["metrics"].items():
            row[name] = v["value"] if np.isfinite(v["value"]) else np.nan
            row[f"{name}_ci"] = (v["low"], v["high"])
        rows.append(row)
    return pd.DataFrame(rows)
