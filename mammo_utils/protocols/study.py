"""Stage 06: the protocol study, ``run_protocols(cfg)``, the function the CLI and notebook 06 call.

It builds the items of both families (films and their augmented copies of each strength; patches), reads stage
02's per-fold backbones, computes every item's features once per backbone, and cross-validates every model under
every arm, every seed and both label sets (the real labels, and labels permuted among women):

- logistic regression on each backbone's frozen features (and, on patches, on each single statistic);
- 1-nearest-neighbour on raw pixels and on each backbone's features (:mod:`.nearest`);
- the memorising CNN on raw pixels (:mod:`.cnn`), on the film arms, one cross-validation per seed for the first
  ``protocols.cnn_seeds`` seeds (every item tested exactly once in each).

It scores everything with patient-bootstrap intervals and writes ``protocols.json``, ``protocols.md``,
``protocols.csv``, ``predictions.csv.gz`` (every test prediction: ids, fold, score, threshold; no pixels),
``protocols.png`` and ``fingerprint.png`` into ``runs/<profile>-<dataset>/06_protocols/``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.config import Config
from mammo_utils.protocols import figures, table
from mammo_utils.protocols.arms import Arm, split_arm
from mammo_utils.protocols.backbones import no_backbone_reason
from mammo_utils.protocols.cnn import CnnSettings, run_cnn
from mammo_utils.protocols.crossval import ProbeSettings, fold_plans, run_logistic
from mammo_utils.protocols.inputs import PIXELS, Study
from mammo_utils.protocols.labels import with_labels
from mammo_utils.protocols.nearest import run_nearest
from mammo_utils.protocols.scoring import fingerprint_summary, over_seeds, pooled_metrics
from mammo_utils.runs.files import atomic_write_bytes, atomic_write_json
from mammo_utils.runs.paths import require
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.stage import StageRun
from mammo_utils.runs.trainer import Progress

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "backbone", "split", "crops", "augment", "pretrain",
            "views", "finetune", "evaluate", "protocols", "precision")
OUTPUTS = ["protocols.json", "protocols.md", "protocols.csv", "protocols.png", "fingerprint.png",
           "predictions.csv.gz"]
MODELS = ("logistic", "nearest", "cnn")


def _labelled(study: Study, arm: Arm, label_set: str, seed: int) -> pd.DataFrame:
    """The arm's items under a label set (random labels: permuted among the family's women with ``seed``)."""
    family = study.family_items[arm.family]
    labels = with_labels(family, label_set, seed).set_index(family.item_id.astype(str))["label"]
    items = study.items_of(arm)
    return items.assign(label=items.item_id.astype(str).map(labels).astype(int).to_numpy())


def _feature_runs(study: Study, skipped: list[dict]) -> list[dict]:
    """Logistic regression and 1-NN: every arm x feature set x label set x seed."""
    p = study.cfg.protocols
    settings = ProbeSettings(p.logistic_c, p.lr_iterations, p.a4_configs)
    groups = [(ls, s) for ls in p.label_sets for s in study.seeds]
    progress = Progress("stage 06 (logistic regression and 1-NN)", [1.0] * len(groups))
    runs = []
    for g, (label_set, seed) in enumerate(groups):
        progress.begin(g, f"{label_set} labels, seed {seed}")
        for arm in study.arms:
            items = split_arm(arm, _labelled(study, arm, label_set, seed), study.n_folds, seed).reset_index(drop=True)
            pos = study.position[arm.family].get_indexer(items.item_id.astype(str))
            plans = fold_plans(arm, items, seed, study.n_folds, study.val_share)
            for model in ("logistic", "nearest"):
                for name in study.feature_sets(arm.family, model):
                    def features(k: int, name=name, family=arm.family, pos=pos) -> np.ndarray:
                        return study.features(family, name, k)[pos]

                    if model == "logistic":
                        run = run_logistic(arm, items, features, seed, study.n_folds, study.val_share, settings,
                                           plans=plans)
                    else:
                        run = run_nearest(arm, items, features, seed, study.n_folds, study.val_share, plans)
                    runs.append({"model": model, "features": name, "arm": arm, "labels": label_set, "seed": seed,
                                 "run": run})
    progress.end()
    if study.ssl not in study.feature_sets("films", "logistic"):
        skipped += [{"model": m, "features": study.ssl, "reason": no_backbone_reason(study.cfg)}
                    for m in ("logistic", "nearest")]
    return runs


def _cnn_groups(study: Study) -> list[list[Arm]]:
    """The CNN's trainings: arms that share a split share one (A4 reads A0's, A5 reads A2 K=top's)."""
    p, by_name = study.cfg.protocols, {a.name: a for a in study.arms}
    if not p.cnn_copies:
        return []
    groups = [[by_name["A0"], by_name["A4"]], [by_name["A1"]]]
    for s in p.copy_strengths:
        for k in p.cnn_copies:
            if f"A2 K={k} {s}" in by_name:
                groups.append([by_name[f"A2 K={k} {s}"]] + ([by_name[f"A5 {s}"]] if k == max(p.copies) else []))
    return groups


def _cnn_runs(study: Study) -> list[dict]:
    """The memorising CNN on the film arms: for each of the first ``cnn_seeds`` seeds, one cross-validation per
    training on that seed's split and labels (every item tested exactly once)."""
    p = study.cfg.protocols
    settings = CnnSettings(p.cnn_width, p.cnn_fit_accuracy, p.cnn_max_epochs, p.cnn_batch_size, p.cnn_lr)
    jobs = [(ls, s, g) for ls in p.label_sets for s in study.seeds[: p.cnn_seeds] for g in _cnn_groups(study)]
    weights = [float(len(study.items_of(g[0]))) for _, _, g in jobs]
    progress = Progress("stage 06 (memorising CNN)", weights)
    runs = []
    for j, (label_set, seed, group) in enumerate(jobs):
        progress.begin(j, f"{group[0].name}, {label_set} labels, seed {seed}")
        items = split_arm(group[0], _labelled(study, group[0], label_set, seed), study.n_folds, seed)
        pixels = study.pixels["films"][study.position["films"].get_indexer(items.item_id.astype(str))]
        for name, run in run_cnn(group, items, pixels, seed, study.n_folds, study.val_share, settings).items():
            arm = next(a for a in group if a.name == name)
            runs.append({"model": "cnn", "features": PIXELS, "arm": arm, "labels": label_set, "seed": seed,
                         "run": run})
    progress.end()
    return runs


def score(study: Study, runs: list[dict]) -> tuple[list[dict], pd.DataFrame, dict]:
    """Metrics per (model, features, arm, labels): each seed's pooled folds (the first seed with its patient
    bootstrap interval), and mean and spread over seeds.

    Returns the result entries, the first seed's prediction rows, and the fingerprints (arm -> features ->
    similarities of 1-NN on the real labels, first seed).
    """
    e = study.cfg.evaluate
    results, rows, fingerprints = [], [], {}
    keys = list(dict.fromkeys((r["model"], r["features"], r["arm"].name, r["labels"]) for r in runs))
    for model, features, arm_name, label_set in keys:
        group = [r for r in runs if (r["model"], r["features"], r["arm"].name, r["labels"]) ==
                 (model, features, arm_name, label_set)]
        arm, seeds = group[0]["arm"], []
        for i, r in enumerate(group):
            scored = pooled_metrics(r["run"].rows, e.bootstrap_resamples if i == 0 else 0, e.ci_level, study.cfg.seed)
            seeds.append({"seed": r["seed"], "metrics": scored, "folds": r["run"].folds})
            if i == 0:
                rows.append(r["run"].rows.assign(model=model, features=features, arm=arm_name, labels=label_set,
                                                 seed=r["seed"]))
                if r["run"].similarity is not None and label_set == "real":
                    fingerprints.setdefault(arm_name, {})[features] = r["run"].similarity
        folds = [f for s in seeds for f in s["folds"]]
        numeric = [k for k in folds[0] if k.startswith(("women", "test_share", "nearest_is", "epochs", "steps",
                                                         "train_accuracy"))]
        entry = {"model": model, "features": features, "arm": arm_name, "labels": label_set, "family": arm.family,
                 "honest": arm.honest, "copies": arm.copies, "strength": arm.strength,
                 "leak_description": arm.leak, "unit": arm.unit, "chosen_on": folds[0]["chosen_on"],
                 "n_configurations": folds[0]["n_configurations"],
                 "leak": {k: float(np.mean([f[k] for f in folds])) for k in numeric},
                 "n_test_items_per_seed": int(sum(f["n_test"] for f in seeds[0]["folds"])),
                 "first_seed": seeds[0]["metrics"], "over_seeds": over_seeds([s["metrics"] for s in seeds]),
                 "seeds": seeds}
        if model == "cnn":
            entry["fit"] = {k: [f[k] for f in folds] for k in ("epochs", "steps", "train_accuracy")}
        if label_set == "real" and features in fingerprints.get(arm_name, {}) and model == "nearest":
            entry["fingerprint"] = fingerprint_summary(fingerprints[arm_name][features])
        results.append(entry)
    return results, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(), fingerprints


def _write_predictions(path: Path, rows: pd.DataFrame) -> None:
    """Every first-seed test prediction, gzipped CSV (ids, fold, label, score, threshold; no pixels)."""
    import gzip

    columns = ["model", "features", "labels", "arm", "seed", "item_id", "image_id", "patient_id", "fold", "label",
               "probability", "threshold"]
    text = rows[columns].rename(columns={"probability": "score"}).to_csv(index=False, float_format="%.6g")
    atomic_write_bytes(path, gzip.compress(text.encode(), mtime=0))


def run_protocols(cfg: Config, force: bool = False) -> Path:
    """Run the protocol study (or reuse a finished one with the same settings) and write its outputs.

    Args:
        cfg: the run's settings (``protocols`` section). Stage 01 must have run; the self-supervised rows need
            stage 02's per-fold backbones and are left out, with the reason, where they are missing.
        force: run it again even if a finished study with the same settings exists (copies, patches and
            features on disk are reused when their own keys match).
    """
    run = StageRun(cfg, "protocols", SECTIONS, OUTPUTS, force)
    if run.up_to_date:
        return run.folder
    require(cfg, "prepare", "preprocessed.csv")
    out = run.begin()
    clock = {"start": time.perf_counter()}
    study = Study(cfg, out)
    clock["items"] = time.perf_counter()
    for ref in [*(r for r in study.fold_refs if r is not None), study.random_ref]:
        for family in ("films", "patches"):
            study.matrix(family, ref)
    clock["features"] = time.perf_counter()
    skipped: list[dict] = []
    runs = _feature_runs(study, skipped)
    clock["logistic_and_nearest"] = time.perf_counter()
    runs += _cnn_runs(study)
    clock["cnn"] = time.perf_counter()
    results, rows, fingerprints = score(study, runs)
    _write_predictions(out / "predictions.csv.gz", rows)
    clock["scoring"] = time.perf_counter()
    seconds = {k: round(clock[k] - clock[prev], 1) for prev, k in zip(list(clock)[:-1], list(clock)[1:], strict=True)}
    seconds["total"] = round(time.perf_counter() - clock["start"], 1)
    summary = table.summary(study, results, skipped, seconds)
    atomic_write_json(out / "protocols.json", {**summary, **provenance(cfg)})
    table.write(out, summary)
    figures.arms_figure(summary, out / "protocols.png")
    figures.fingerprint_figure(fingerprints, study.arms, out / "fingerprint.png")
    log.info("stage 06: %d runs in %.0f s (%d feature rows computed); %s", len(runs), seconds["total"],
             study.store.computed, out)
    return run.finish(seconds=seconds)
