"""Stage 04: metrics with patient-level 95% CIs on the held-out split, figures, and the results table.

Every threshold-dependent metric uses the threshold chosen on the validation split of the same run (Youden's
J), never on test. Besides the headline models (one per initialisation, for each task of ``finetune.tasks``
under ``tasks`` in ``metrics.json``), the stage scores every run of the
label-efficiency sweep, the breakdown by breast density where the dataset records it, and the patient-level
cross-validation when stage 03 ran one (out-of-fold test predictions pooled, each patient once, plus the
per-fold values).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

from . import plots
from .config import Config
from .metrics import METRICS, binary_metrics, choose_threshold, metrics_with_ci, roc_band
from .paths import atomic_write_json, require, stage_dir
from .report import write_report
from .stage import is_done, mark_done, provenance

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "synthetic", "augment", "pretrain", "finetune",
            "evaluate", "precision")
PAPER_CLAIM = {"accuracy": 0.967, "source": "Saeed & Naveed, arXiv 2509.20474 (2025)",
               "note": "one accuracy for INbreast and MIAS; task, split and label fraction not stated"}
LABEL_EFFICIENCY_METRIC = "roc_auc"


def _flag(df: pd.DataFrame, column: str, default: bool) -> pd.Series:
    """A boolean column of a predictions table as written to CSV (absent in older runs: ``default``)."""
    if column not in df:
        return pd.Series(default, index=df.index)
    return df[column].astype(str).str.lower().isin(["true", "1"])


def headline_predictions(predictions: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
    """The rows of the headline runs (one per initialisation) of ``task`` (None: every task), without the
    sweep's other runs."""
    rows = predictions[_flag(predictions, "headline", True)]
    return rows if task is None or "task" not in rows else rows[rows["task"].astype(str) == task]


def task_rows(df: pd.DataFrame, task: str, main_task: str) -> pd.DataFrame:
    """Rows of one task (tables written before the ``task`` column hold the main task only)."""
    if "task" not in df:
        return df if task == main_task else df.iloc[:0]
    return df[df["task"].astype(str) == task]


def _score(df: pd.DataFrame, cfg: Config) -> dict:
    """Threshold from the validation rows, every metric on the test rows with its CI."""
    val, test = df[df.split == "val"], df[df.split == "test"]
    threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
    return {
        "threshold": threshold,
        "threshold_rule": "Youden's J on the validation split",
        "n_test_images": int(len(test)),
        "n_test_patients": int(test["patient_id"].nunique()),
        "n_test_positive": int(test["label"].sum()),
        "metrics": metrics_with_ci(test, threshold, cfg.evaluate.bootstrap_resamples, cfg.evaluate.ci_level,
                                   cfg.seed),
    }


def evaluate_predictions(predictions: pd.DataFrame, cfg: Config) -> dict:
    """Metrics per headline model (init): threshold from validation, every metric on test with its CI."""
    rows = headline_predictions(predictions, cfg.task)
    return {str(init): _score(df, cfg) for init, df in rows.groupby("init", sort=False)}


def evaluate_sweep(predictions: pd.DataFrame, cfg: Config, records: pd.DataFrame | None = None) -> list[dict]:
    """One entry per label-efficiency run: init, protocol, label_fraction, its record and its metrics with CIs."""
    rows = task_rows(predictions[_flag(predictions, "sweep", False)], cfg.task, cfg.task)
    entries = []
    for (init, protocol, fraction), df in rows.groupby(["init", "protocol", "label_fraction"], sort=False):
        entry = {"init": str(init), "protocol": str(protocol), "label_fraction": float(fraction), **_score(df, cfg)}
        if records is not None and len(records):
            match = records[(records["init"].astype(str) == str(init)) & (records["protocol"] == protocol)
                            & np.isclose(records["label_fraction"].astype(float), float(fraction))]
            if len(match):
                rec = match.iloc[0]
                for k in ("run", "n_train_patients", "n_train_images", "n_train_positive", "epochs", "steps",
                          "best_epoch", "best_val_auc", "seconds"):
                    if k in rec and pd.notna(rec[k]):
                        entry[k] = rec[k].item() if hasattr(rec[k], "item") else rec[k]
        entries.append(entry)
    return sorted(entries, key=lambda e: (e["init"], e["protocol"], e["label_fraction"]))


def evaluate_cross_validation(cv: pd.DataFrame, cfg: Config) -> dict:
    """Pooled out-of-fold metrics per init (each fold's own validation threshold) and the per-fold values."""
    result = {}
    for init, df in cv.groupby("init", sort=False):
        tests, folds = [], []
        for k, fold in df.groupby("cv_fold"):
            val, test = fold[fold.split == "val"], fold[fold.split == "test"]
            threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
            tests.append(test.assign(threshold=threshold))
            folds.append({"cv_fold": int(k), "threshold": threshold, "n_test_patients": int(test.patient_id.nunique()),
                          "metrics": binary_metrics(test["label"], test["probability"], threshold)})
        pooled = pd.concat(tests, ignore_index=True)
        per_metric = {m: [f["metrics"][m] for f in folds] for m in METRICS}
        result[str(init)] = {
            "n_folds": len(folds),
            "n_test_patients": int(pooled.patient_id.nunique()),
            "each_patient_tested_once": bool(pooled.groupby("patient_id")["cv_fold"].nunique().max() == 1),
            "all_negative_accuracy": float((pooled["label"].astype(int) == 0).mean()),
            "threshold_rule": "Youden's J on each fold's validation fold, applied to that fold's test fold",
            "pooled": metrics_with_ci(pooled, None, cfg.evaluate.bootstrap_resamples, cfg.evaluate.ci_level,
                                      cfg.seed),
            "per_fold": folds,
            "fold_mean": {m: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                          for m, v in per_metric.items()},
            "fold_sd": {m: float(np.nanstd(v, ddof=1)) if np.isfinite(v).sum() > 1 else float("nan")
                        for m, v in per_metric.items()},
        }
    return result


def evaluate_by_density(predictions: pd.DataFrame, index: pd.DataFrame, models: dict, cfg: Config) -> dict | None:
    """Headline metrics on the test images of each breast-density category; None where density is not recorded."""
    if "density" not in index:
        return None
    density = index.set_index(index["image_id"].astype(str))["density"].astype(str)
    test = headline_predictions(predictions, cfg.task)
    test = test[test.split == "test"].assign(density=lambda d: d["image_id"].astype(str).map(density).fillna(""))
    if not (test["density"] != "").any():
        return None
    out: dict = {}
    for init, df in test.groupby("init", sort=False):
        threshold = models[str(init)]["threshold"]
        out[str(init)] = {
            str(d): {"n_test_images": int(len(part)), "n_test_patients": int(part.patient_id.nunique()),
                     "n_test_positive": int(part["label"].sum()),
                     "metrics": metrics_with_ci(part, threshold, cfg.evaluate.bootstrap_resamples,
                                                cfg.evaluate.ci_level, cfg.seed)}
            for d, part in sorted(df[df["density"] != ""].groupby("density"))
        }
    return out


def _read_optional_csv(path: Path) -> pd.DataFrame | None:
    try:
        return pd.read_csv(path)
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None


def _long(entries: dict, keys: tuple[str, ...]) -> pd.DataFrame:
    """Flatten ``{key...: {"metrics": {...}}}`` entries into one row per metric value (for the figures)."""
    return pd.DataFrame([{**dict(zip(keys, k, strict=True)), "n_test_patients": e.get("n_test_patients"),
                          "metric": name, **v}
                         for k, e in entries.items() for name, v in e["metrics"].items()])


def run_evaluate(cfg: Config, force: bool = False) -> Path:
    """Write ``metrics.json``, ``roc.png``, ``confusion.png``, ``label_efficiency.png``, ``by_density.png`` and
    the run's ``report.md``."""
    out = stage_dir(cfg, "evaluate", create=False)
    key = cfg.section_hash(*SECTIONS)
    if not force and is_done(out, key, ["metrics.json"]):
        log.info("stage 04 is up to date in %s", out)
        return out
    predictions = pd.read_csv(require(cfg, "finetune", "predictions.csv"), keep_default_na=False)
    finetune_dir = require(cfg, "finetune", "predictions.csv").parent
    stage_dir(cfg, "evaluate")
    models = evaluate_predictions(predictions, cfg)
    curves, bands, matrices = {}, {}, {}
    for init, df in headline_predictions(predictions, cfg.task).groupby("init", sort=False):
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

    sweep = evaluate_sweep(predictions, cfg, _read_optional_csv(finetune_dir / "sweep.csv"))
    if sweep:
        plots.label_efficiency(pd.DataFrame([
            {"init": e["init"], "protocol": e["protocol"], "label_fraction": e["label_fraction"],
             **e["metrics"][LABEL_EFFICIENCY_METRIC]} for e in sweep]),
            out / "label_efficiency.png", metric=LABEL_EFFICIENCY_METRIC)

    index = pd.read_csv(require(cfg, "prepare", "preprocessed.csv"), keep_default_na=False)
    by_density = evaluate_by_density(predictions, index, models, cfg)
    if by_density:
        plots.by_density(_long({(i, d): v for i, per in by_density.items() for d, v in per.items()},
                               ("init", "density")), out / "by_density.png")

    cv = None
    if (finetune_dir / "cv_predictions.csv").exists():
        cv = pd.read_csv(finetune_dir / "cv_predictions.csv", keep_default_na=False)
    tasks = {}
    for task in cfg.all_tasks():
        entry: dict = {"models": evaluate_predictions(predictions, cfg.for_task(task))}
        if cv is not None:
            rows = task_rows(cv, task, cfg.task)
            entry["cross_validation"] = evaluate_cross_validation(rows, cfg) if len(rows) else None
        elif cfg.finetune.cv:
            entry["cross_validation"] = {"skipped": f"{cfg.dataset} has an official test split; it is used instead."}
        else:
            entry["cross_validation"] = None
        if entry["models"]:
            test = headline_predictions(predictions, task)
            test = test[(test.split == "test") & (test["init"] == test["init"].iloc[0])]
            # What answering "negative" for every image scores: the floor any accuracy must be read against.
            entry["all_negative_accuracy"] = float((test["label"].astype(int) == 0).mean())
            tasks[task] = entry
    cross_validation = tasks.get(cfg.task, {}).get("cross_validation")

    metrics = {"task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "split": "test",
               "ci_level": cfg.evaluate.ci_level, "bootstrap_resamples": cfg.evaluate.bootstrap_resamples,
               "ci_unit": "patient", "models": models, "paper_claim": PAPER_CLAIM,
               "label_efficiency": {"metric": LABEL_EFFICIENCY_METRIC, "runs": sweep},
               "by_density": by_density, "cross_validation": cross_validation, "tasks": tasks, **provenance(cfg)}
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
