"""Stage 06: the protocol study, ``run_protocols(cfg)``, the function the CLI and notebook 06 call.

It builds the items of both families (films and their augmented copies; patches), finds or pretrains one backbone
per fold, computes every item's features once per backbone, cross-validates the frozen-feature logistic
regression under every arm, both initialisations and every seed, fine-tunes the small CNN under A0, A2 and A3b,
scores everything with patient-bootstrap intervals, and writes ``protocols.json``, ``protocols.md``,
``protocols.csv``, ``protocols.png`` (one row per arm, the paper's claim as a line) and ``fingerprint.png``
(each test item's similarity to its nearest training item, per arm) into ``runs/<profile>-<dataset>/06_protocols/``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mammo_utils.config import Config
from mammo_utils.protocols import cnn, figures, table
from mammo_utils.protocols.arms import Arm, split_arm
from mammo_utils.protocols.crossval import ArmRun, ProbeSettings, run_logistic
from mammo_utils.protocols.features import BackboneRef
from mammo_utils.protocols.inputs import Study, _digest
from mammo_utils.protocols.items import with_copies
from mammo_utils.protocols.scoring import fingerprint_summary, over_seeds, pooled_metrics
from mammo_utils.runs.files import atomic_write_json
from mammo_utils.runs.paths import require
from mammo_utils.runs.provenance import provenance
from mammo_utils.runs.stage import StageRun, is_done
from mammo_utils.runs.trainer import Progress

log = logging.getLogger(__name__)

SECTIONS = ("dataset", "seed", "task", "image_size_px", "split", "augment", "pretrain", "finetune", "evaluate",
            "protocols", "precision")
OUTPUTS = ["protocols.json", "protocols.md", "protocols.csv", "protocols.png", "fingerprint.png"]


def _logistic_runs(study: Study, skipped: list[dict]) -> list[dict]:
    """Every arm x init x seed of the frozen-feature regression."""
    cfg, p = study.cfg, study.cfg.protocols
    settings = ProbeSettings(p.logistic_c, p.lr_iterations, p.a4_configs)
    groups = [(f, i, s) for f in ("films", "patches") for i in (study.ssl, "random") for s in study.seeds]
    progress = Progress("stage 06 (logistic regression)", [1.0] * len(groups))
    runs = []
    for g, (family, init, seed) in enumerate(groups):
        refs = study.refs(family, init, seed)
        arms = [a for a in study.arms if a.family == family]
        if any(r is None for r in refs):
            if seed == study.seeds[0]:
                skipped += [{"model": "logistic", "arm": a.name, "init": init, "reason": _no_backbone(cfg, family)}
                            for a in arms]
            continue
        progress.begin(g, f"{family}, {init} init, seed {seed}")
        for arm in arms:
            items = split_arm(arm, study.items_of(arm), study.n_folds, seed)
            pos = study.position[family].get_indexer(items.item_id.astype(str))

            def features(k: int, refs=refs, family=family, pos=pos) -> np.ndarray:
                return study.matrix(family, refs[k])[pos]

            run = run_logistic(arm, items, features, seed, study.n_folds, study.val_share, settings,
                               fingerprint=seed == study.seeds[0])
            runs.append({"model": "logistic", "arm": arm, "init": init, "seed": seed, "run": run})
    progress.end()
    return runs


def _no_backbone(cfg: Config, family: str) -> str:
    if family == "films":
        return ("no per-fold self-supervised backbone of the films: stage 02 pretrains them where finetune.cv is on "
                "(run it with --set finetune.cv=true), or set protocols.pretrain_folds=true")
    return "the per-fold patch pretraining is off in this profile (protocols.pretrain_folds=false)"


def _cnn_runs(study: Study, skipped: list[dict]) -> list[dict]:
    """The small fine-tuned CNN under A0 and A2 (films) and A3b (patches); each seed trains once."""
    cfg, p, out = study.cfg, study.cfg.protocols, study.out
    if p.cnn_seeds < 1:
        return []
    by_name = {a.name: a for a in study.arms}
    a2 = Arm(f"A2 K={p.cnn_copies}", "films", "item_id", f"{p.cnn_copies} augmented copies per film, then split "
             "by copy", copies=p.cnn_copies)
    inits = [study.ssl if i != "random" else "random" for i in p.cnn_inits]
    plan = [(by_name["A0"], i) for i in inits] + [(by_name.get(a2.name, a2), i) for i in inits]
    plan += [(by_name["A3b"], study.ssl), (by_name["A3b"], "random")]
    films_and_copies = pd.concat([study.films, with_copies(study.copies, p.cnn_copies).drop(columns="copy")])
    small = cnn.resized_items(films_and_copies, p.cnn_size_px, out / "items" / f"cnn{p.cnn_size_px}-{study.copies_key}")
    jobs = [(arm, init, s) for arm, init in plan for s in range(p.cnn_seeds)]
    progress = Progress("stage 06 (fine-tuned CNN)", [1.0] * len(jobs))
    runs = []
    for j, (arm, init, s) in enumerate(jobs):
        seed, k = cfg.seed + s, s % study.n_folds  # seed s trains once and tests fold s
        ref = study.refs(arm.family, init, seed)[k]
        if ref is None:
            if s == 0:
                skipped.append({"model": "cnn", "arm": arm.name, "init": init, "reason": _no_backbone(cfg, arm.family)})
            continue
        if arm.family == "patches":
            items, size = study.patches, p.patch_size_px
        else:
            ids = set(study.items_of(arm).item_id.astype(str))
            items, size = small[small.item_id.astype(str).isin(ids)], p.cnn_size_px
        progress.begin(j, f"{arm.name}, {init} init, seed {seed} (tests fold {k})")
        run = _cached_cnn(study, arm, init, seed, k, split_arm(arm, items, study.n_folds, seed), ref, size)
        runs.append({"model": "cnn", "arm": arm, "init": init, "seed": seed, "run": run})
    progress.end()
    return runs


def _cached_cnn(study: Study, arm: Arm, init: str, seed: int, k: int, items: pd.DataFrame, ref: BackboneRef,
                size: int) -> ArmRun:
    """One CNN fine-tuning, or its predictions read back when it already ran with the same settings."""
    p = study.cfg.protocols
    key = _digest([study.cfg.section_hash("finetune", "task", "augment", "precision"), ref.tag, size, p.cnn_steps,
                   p.cnn_checks, sorted(items.item_id.astype(str))])
    folder = study.out / "cnn" / f"{arm.name.replace(' ', '').replace('=', '')}-{init}-s{seed}"
    if is_done(folder, key, ["predictions.csv", "folds.json"]):
        return ArmRun(pd.read_csv(folder / "predictions.csv", dtype={"item_id": str, "image_id": str,
                                                                       "patient_id": str}),
                      json.loads((folder / "folds.json").read_text()))
    run = cnn.run_cnn(study.cfg, arm.unit, items, ref.load(), seed, k, study.n_folds, study.val_share, size,
                      p.cnn_steps, p.cnn_checks, random_init=init == "random")
    folder.mkdir(parents=True, exist_ok=True)
    run.rows.to_csv(folder / "predictions.csv", index=False)
    atomic_write_json(folder / "folds.json", run.folds)
    atomic_write_json(folder / "stage.json", {"key": key})
    return run


def score(study: Study, runs: list[dict]) -> tuple[list[dict], pd.DataFrame, dict]:
    """Metrics per (model, arm, init): each seed's pooled folds with its CI, and mean and spread over seeds.

    Returns the result entries, every prediction row, and the fingerprints (arm -> init -> similarities).
    """
    cfg = study.cfg
    e = cfg.evaluate
    results, rows, fingerprints = [], [], {}
    keys = list(dict.fromkeys((r["model"], r["arm"].name, r["init"]) for r in runs))
    for model, arm_name, init in keys:
        group = [r for r in runs if (r["model"], r["arm"].name, r["init"]) == (model, arm_name, init)]
        arm = group[0]["arm"]
        seeds = []
        for r in group:
            scored = pooled_metrics(r["run"].rows, e.bootstrap_resamples, e.ci_level, cfg.seed)
            seeds.append({"seed": r["seed"], "metrics": scored, "folds": r["run"].folds})
            rows.append(r["run"].rows.assign(model=model, arm=arm_name, init=init, seed=r["seed"]))
            if r["run"].similarity is not None:
                fingerprints.setdefault(arm_name, {})[init] = r["run"].similarity
        folds = [f for s in seeds for f in s["folds"]]
        leak = {k: float(np.mean([f[k] for f in folds])) for k in folds[0] if k.startswith(("women", "test_share"))}
        entry = {"model": model, "arm": arm_name, "family": arm.family, "init": init, "honest": arm.honest,
                 "leak_description": arm.leak, "unit": arm.unit, "chosen_on": folds[0]["chosen_on"],
                 "n_configurations": folds[0]["n_configurations"], "leak": leak,
                 "n_test_items_per_seed": int(sum(f["n_test"] for f in seeds[0]["folds"])),
                 "over_seeds": over_seeds([s["metrics"] for s in seeds]), "seeds": seeds}
        if model == "cnn":  # seed s tested fold s: the seeds' test items together are one cross-validation
            pooled = pd.concat([r["run"].rows for r in group], ignore_index=True)
            entry["pooled"] = pooled_metrics(pooled, e.bootstrap_resamples, e.ci_level, cfg.seed)
            entry["pooled_folds"] = sorted({f["fold"] for f in folds})
        if arm_name in fingerprints and init in fingerprints[arm_name] and model == "logistic":
            entry["fingerprint"] = fingerprint_summary(fingerprints[arm_name][init])
        results.append(entry)
    return results, pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(), fingerprints


def run_protocols(cfg: Config, force: bool = False) -> Path:
    """Run the protocol study (or reuse a finished one with the same settings) and write its outputs.

    Args:
        cfg: the run's settings (``protocols`` section; stages 01 and 02 must have run).
        force: run it again even if a finished study with the same settings exists (features, patches and
            pretrained backbones on disk are reused when their own keys match).
    """
    run = StageRun(cfg, "protocols", SECTIONS, OUTPUTS, force)
    if run.up_to_date:
        return run.folder
    require(cfg, "pretrain", "backbone.pt")
    out = run.begin()
    clock = {"start": time.perf_counter()}
    study = Study(cfg, out)
    clock["items_and_backbones"] = time.perf_counter()
    skipped: list[dict] = []
    runs = _logistic_runs(study, skipped)
    clock["logistic"] = time.perf_counter()
    runs += _cnn_runs(study, skipped)
    clock["cnn"] = time.perf_counter()
    results, rows, fingerprints = score(study, runs)
    rows.to_csv(out / "predictions.csv", index=False)
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
