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

from mammo_utils.config import Config
from mammo_utils.evaluate import figures
from mammo_utils.evaluate.gain import draw_aucs, gain_table
from mammo_utils.evaluate.metrics import METRICS, binary_metrics, choose_threshold, metrics_with_ci, roc_band
from mammo_utils.prepare.stage import load_index
from mammo_utils.runs.files import atomic_write_json, atomic_write_text
from mammo_utils.runs.paths import require
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.stage import StageRun

log = logging.getLogger(__name__)

SECTIONS = ("task", "seed", "evaluate")  # and, through stage_key, everything stage 03 depended on
PAPER_CLAIM = {"accuracy": 0.967, "source": "Saeed & Naveed, arXiv 2509.20474 (2025)",
               "note": "one accuracy for INbreast and MIAS; task, split and label fraction not stated"}


def headline_predictions(predictions: pd.DataFrame, task: str | None = None) -> pd.DataFrame:
    """The rows of the headline film runs (one per initialisation) of ``task`` (None: every task)."""
    rows = predictions[predictions["headline"].astype(str).str.lower().isin(["true", "1"])]
    return rows if task is None else rows[rows["task"].astype(str) == task]


def task_rows(df: pd.DataFrame, task: str) -> pd.DataFrame:
    """The rows of one task."""
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


def evaluate_cross_validation(cv: pd.DataFrame, cfg: Config) -> dict:
    """Pooled out-of-fold metrics per init (each fold's own validation threshold) and the per-fold values."""
    result = {}
    for init, df in cv.groupby("init", sort=False):
        result[str(init)] = _pooled_folds(df, cfg)
    return result


def _pooled_folds(df: pd.DataFrame, cfg: Config) -> dict:
    """One model's folds: each fold's threshold chosen on its validation rows, the test rows pooled."""
    tests, folds = [], []
    for k, fold in df.groupby("cv_fold"):
        val, test = fold[fold.split == "val"], fold[fold.split == "test"]
        threshold = choose_threshold(val["label"].to_numpy(), val["probability"].to_numpy())
        tests.append(test.assign(threshold=threshold))
        folds.append({"cv_fold": int(k), "threshold": threshold, "n_test_patients": int(test.patient_id.nunique()),
                      "metrics": binary_metrics(test["label"], test["probability"], threshold)})
    pooled = pd.concat(tests, ignore_index=True)
    per_metric = {m: [f["metrics"][m] for f in folds] for m in METRICS}
    return {
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


def copy_sibling_accuracy(rows: pd.DataFrame, index: pd.DataFrame) -> float | None:
    """Accuracy of copying each film's label from another film of the same woman: what a model would score by
    recognising the woman, under a split by image that put her other film in training.

    The copied film is the other view of the same breast where there is one (it shows the same lesion), else the
    woman's other films (their majority; ties say positive). On MIAS a woman's two films are her left and right
    breasts, which usually carry different labels, so this scores low there; where a woman has both views of a
    breast (CBIS-DDSM, the synthetic set) it scores high: that is what a split by image leaks.

    Args:
        rows: one row per film: ``image_id``, ``patient_id``, ``label``. index: ``image_id``, ``laterality``,
            ``view`` per film.

    Returns:
        The accuracy over the films that have a sibling in ``rows``, or None when none has.
    """
    side = index.assign(image_id=index.image_id.astype(str)).set_index("image_id")[["laterality", "view"]]
    df = rows.assign(image_id=rows.image_id.astype(str)).join(side, on="image_id")
    hits = []
    for _, woman in df.groupby(df.patient_id.astype(str)):
        for i, film in woman.iterrows():
            others = woman.drop(index=i)
            if others.empty:
                continue
            same_breast = others[others.laterality == film.laterality]
            copied = same_breast if len(same_breast) else others
            hits.append(int(copied.label.astype(int).mean() >= 0.5) == int(film.label))
    return float(np.mean(hits)) if hits else None


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


def _long(entries: dict, keys: tuple[str, ...]) -> pd.DataFrame:
    """Flatten ``{key...: {"metrics": {...}}}`` entries into one row per metric value (for the figures)."""
    return pd.DataFrame([{**dict(zip(keys, k, strict=True)), "n_test_patients": e.get("n_test_patients"),
                          "metric": name, **v}
                         for k, e in entries.items() for name, v in e["metrics"].items()])


def run_evaluate(cfg: Config, force: bool = False) -> Path:
    """Write ``metrics.json``, ``ssl_gain.json`` (and ``.csv``), ``roc.png``, ``confusion.png``,
    ``label_efficiency.png`` and ``by_density.png``; the run's ``report.md`` follows."""
    run = StageRun(cfg, "evaluate", SECTIONS, ["metrics.json"], force)
    if run.up_to_date:
        return run.folder
    predictions = pd.read_csv(require(cfg, "finetune", "predictions.csv"), keep_default_na=False)
    finetune_dir = require(cfg, "finetune", "predictions.csv").parent
    out = run.begin()
    index = load_index(cfg)
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
        figures.roc_curves(curves, out / "roc.png", bands)
    if matrices:
        names = ("no finding", "finding") if cfg.task == "abnormal" else ("not cancer", "cancer")
        figures.confusion_matrices(matrices, out / "confusion.png", names)

    crops = pd.read_csv(finetune_dir / "crop_predictions.csv", dtype={"crop_id": str, "patient_id": str})
    films = pd.read_csv(finetune_dir / "film_predictions.csv", dtype={"image_id": str, "patient_id": str})
    gain = gain_table(crops, films, cfg.dataset, cfg.pretrain.method, cfg.evaluate.bootstrap_resamples,
                      cfg.evaluate.ci_level, cfg.seed)
    atomic_write_json(out / "ssl_gain.json", gain)
    atomic_write_text(out / "ssl_gain.csv", pd.DataFrame(gain).to_csv(index=False))
    if len(crops):
        figures.label_efficiency(draw_aucs(crops[crops.split == "test"]), gain, out / "label_efficiency.png")

    by_density = evaluate_by_density(predictions, index, models, cfg)
    if by_density:
        figures.by_density(_long({(i, d): v for i, per in by_density.items() for d, v in per.items()},
                               ("init", "density")), out / "by_density.png")

    cv = None
    if (finetune_dir / "cv_predictions.csv").exists():
        cv = pd.read_csv(finetune_dir / "cv_predictions.csv", keep_default_na=False)
    tasks = {}
    for task in cfg.all_tasks():
        entry: dict = {"models": evaluate_predictions(predictions, cfg.for_task(task))}
        if task == "abnormal" and len(films):  # the crop classifiers detect findings: they read films for this task
            entry["films_from_crops"] = {str(init): _pooled_folds(df, cfg) for init, df in films.groupby("init")}
        if cv is not None:
            rows = task_rows(cv, task)
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
            entry["copy_sibling_accuracy"] = copy_sibling_accuracy(test, index)
            if entry["cross_validation"] and "skipped" not in entry["cross_validation"]:
                everyone = task_rows(cv, task)
                everyone = everyone[everyone.split == "test"].drop_duplicates("image_id")
                entry["cv_copy_sibling_accuracy"] = copy_sibling_accuracy(everyone, index)
            tasks[task] = entry
    cross_validation = tasks.get(cfg.task, {}).get("cross_validation")

    metrics = {"task": cfg.task, "dataset": cfg.dataset, "profile": cfg.profile, "split": "test",
               "ci_level": cfg.evaluate.ci_level, "bootstrap_resamples": cfg.evaluate.bootstrap_resamples,
               "ci_unit": "patient", "models": models, "paper_claim": PAPER_CLAIM,
               "ssl_gain": gain,
               "by_density": by_density, "cross_validation": cross_validation, "tasks": tasks, **provenance(cfg)}
    atomic_write_json(out / "metrics.json", metrics)
    return run.finish()


def load_metrics(cfg: Config) -> dict:
    """The ``metrics.json`` written by :func:`run_evaluate`, for the stages and notebooks that read stage 04.

    Raises:
        MissingStageOutput: stage 04 has not run, or its ``metrics.json`` is not readable JSON.
    """
    import json

    from mammo_utils.errors import MissingStageOutput
    from mammo_utils.runs.paths import how_to_run

    path = require(cfg, "evaluate", "metrics.json")
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        raise MissingStageOutput(f"{path} is not readable JSON. {how_to_run(cfg, 'evaluate')}") from None


def decision_threshold(cfg: Config, init: str) -> float:
    """The probability threshold stage 04 chose on validation (Youden's J) for the headline model of ``init``
    and ``cfg.task``; 0.5, with a warning, when stage 04 has not run or has no such model."""
    from mammo_utils.errors import MissingStageOutput
    from mammo_utils.runs.paths import how_to_run

    try:
        metrics = load_metrics(cfg)
    except MissingStageOutput as exc:
        log.warning("Decision threshold 0.5 for %s: %s", init, exc)
        return 0.5
    models = ((metrics.get("tasks") or {}).get(cfg.task) or {}).get("models")
    threshold = ((models or {}).get(init) or {}).get("threshold")
    if not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
        log.warning("Decision threshold 0.5 for %s: stage 04's metrics.json has no threshold for it on task %s. "
                    "%s", init, cfg.task, how_to_run(cfg, "evaluate"))
        return 0.5
    return float(threshold)
