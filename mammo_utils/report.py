"""``report.md``: the results table (with the paper's claim beside it) and what each stage wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

from mammo_utils.config import Config
from mammo_utils.runs.files import atomic_write_text
from mammo_utils.runs.paths import STAGES, run_dir

TABLE_METRICS = ("accuracy", "balanced_accuracy", "roc_auc", "sensitivity", "specificity")


def _fmt(v: dict) -> str:
    if v is None or not math.isfinite(v.get("value", float("nan"))):
        return "n/a"
    return f"{v['value']:.3f} [{v['low']:.3f}, {v['high']:.3f}]"


def results_table(metrics: dict) -> str:
    """Markdown table: one row per initialisation, then the paper's claim."""
    head = "| model | " + " | ".join(TABLE_METRICS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_METRICS) + 1)]
    for init, m in metrics["models"].items():
        lines.append(f"| {init} init, fine-tuned | " + " | ".join(_fmt(m["metrics"].get(k)) for k in TABLE_METRICS) + " |")
    claim = metrics.get("paper_claim", {})
    if claim:
        lines.append(f"| paper's claim ({claim['source'].split(',')[0]}) | {claim['accuracy']:.3f} (no CI) | "
                     + " | ".join("not reported" for _ in TABLE_METRICS[1:]) + " |")
    return "\n".join(lines)


def pretraining_table(pre: dict) -> str:
    """Markdown table of ``pretraining.json``: per backbone, the last epoch's loss beside ln(2N − 1), its pretext
    accuracy beside chance, and the kNN monitor beside its untrained value."""
    lines = ["| backbone | steps | loss (constant-output level) | pretext top-1 (chance) | kNN: untrained → last |",
             "|---|---|---|---|---|"]
    for name, rows in (pre.get("backbones") or {}).items():
        first, last = rows[0], rows[-1]
        if last.get("loss") is None:
            continue
        lines.append(f"| {name} | {last['step']} | {last['loss']:.2f} ({last['loss_constant_output']:.2f}) | "
                     f"{last['pretext_top1']:.3f} ({last['pretext_chance']:.4f}) | "
                     f"{_num(first.get('knn'))} → {_num(last.get('knn'))} |")
    return "\n".join(lines)


def gain_table(gain: list[dict]) -> str:
    """Markdown table of ``ssl_gain.json``: per task, classifier and label fraction, the self-supervised and random
    inits' ROC AUC, their paired difference with its 95% interval, and the strongest baseline."""
    lines = ["| task | classifier | labelled women | SSL | random | difference [95% CI] | best baseline | "
             "test women |", "|---|---|---|---|---|---|---|---|"]
    for r in gain:
        base = (r["best_baseline"], r["best_baseline_auc"]) if r.get("best_baseline") else None
        ci = "n/a" if r.get("ci_low") is None else f"{r['difference']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"
        lines.append(f"| {r['task']} | {r['classifier']} | {r['label_fraction']:.0%} | {_num(r.get('simclr'))} | "
                     f"{_num(r.get('random'))} | {ci} | {f'{base[0]} {base[1]:.3f}' if base else '—'} | "
                     f"{r.get('n_test_women')} |")
    return "\n".join(lines)


def _num(v: float | None) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.3f}"


CLAIM_METRICS = ("accuracy", "balanced_accuracy", "roc_auc")
WHY_DIFFERENT = (
    "Why they may differ: the paper gives one accuracy for INbreast and MIAS and names neither the task "
    "(normal vs abnormal, or malignant vs not), nor the split (by image or by woman), nor the resolution, label "
    "fraction or threshold rule. A split by image puts a woman's other films in training; a model that recognises "
    "her can then copy their label. That pays where her films share a label (two views of one breast show the "
    "same lesion) and not where they differ: a MIAS woman's two films are her left and right breasts, which "
    "usually carry different labels. The column \"copy a sibling\" is what copying the label of the woman's "
    "other film scores, and \"all-negative\" what answering \"negative\" for every film scores: accuracy "
    "rewards the majority class. Ours are measured on a stated task, split by woman, with the threshold chosen "
    "on validation only, after the pretraining budget of this profile, with 95% CIs over women that show how "
    "small the test set is."
)


def claim_table(metrics: dict) -> str:
    """Markdown table: every task x initialisation (held-out split and, where run, cross-validation) beside
    the paper's claim. Empty for metrics written before tasks were recorded."""
    tasks = metrics.get("tasks") or {}
    if not tasks:
        return ""
    def num(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    lines = ["| task | model | evaluated on | " + " | ".join(CLAIM_METRICS)
             + " | all-negative accuracy | copy a sibling's label |", "|" + "---|" * (len(CLAIM_METRICS) + 5)]
    for task, entry in tasks.items():
        floors = f"{num(entry.get('all_negative_accuracy'))} | {num(entry.get('copy_sibling_accuracy'))}"
        for init, m in entry["models"].items():
            lines.append(f"| {task} | {init} init | held-out test, {m['n_test_patients']} women | "
                         + " | ".join(_fmt(m["metrics"].get(k)) for k in CLAIM_METRICS) + f" | {floors} |")
        cv = entry.get("cross_validation") or {}
        for init, m in ({} if "skipped" in cv else cv).items():
            cv_floors = f"{num(m.get('all_negative_accuracy'))} | {num(entry.get('cv_copy_sibling_accuracy'))}"
            lines.append(f"| {task} | {init} init | {m['n_folds']}-fold CV, {m['n_test_patients']} women | "
                         + " | ".join(_fmt(m["pooled"].get(k)) for k in CLAIM_METRICS) + f" | {cv_floors} |")
        for init, m in (entry.get("films_from_crops") or {}).items():
            where = f"{m['n_folds']}-fold CV" if m["n_folds"] > 1 else "held-out test"
            lines.append(f"| {task} | {init} init, crop classifier (film = its highest crop) | {where}, "
                         f"{m['n_test_patients']} women | " + " | ".join(_fmt(m["pooled"].get(k)) for k in CLAIM_METRICS)
                         + f" | {num(m.get('all_negative_accuracy'))} | |")
    claim = metrics.get("paper_claim") or {}
    if claim:
        lines.append(f"| not stated | paper ({claim['source'].split(',')[0]}) | INbreast and MIAS, split not stated | "
                     f"{claim['accuracy']:.3f} (no CI) | " + " | ".join("not reported" for _ in CLAIM_METRICS[1:])
                     + " | |")
    return "\n".join(lines)


def cross_validation_table(metrics: dict) -> str:
    """Markdown table of the cross-validation: pooled out-of-fold value [CI] and the folds' mean ± SD."""
    cv = metrics.get("cross_validation") or {}
    if not cv or "skipped" in cv:
        return ""
    lines = ["| model | " + " | ".join(TABLE_METRICS) + " |", "|" + "---|" * (len(TABLE_METRICS) + 1)]
    for init, m in cv.items():
        lines.append(f"| {init}, {m['n_folds']}-fold pooled | "
                     + " | ".join(_fmt(m["pooled"].get(k)) for k in TABLE_METRICS) + " |")
        lines.append(f"| {init}, fold mean ± SD | "
                     + " | ".join(f"{m['fold_mean'][k]:.3f} ± {m['fold_sd'][k]:.3f}" for k in TABLE_METRICS) + " |")
    return "\n".join(lines)


def write_report(cfg: Config) -> Path:
    """Write ``runs/<profile>-<dataset>/report.md`` from what the stages wrote so far."""
    root = run_dir(cfg)
    parts = [f"# Run {cfg.profile}-{cfg.dataset}", ""]
    pre_path = root / STAGES["pretrain"] / "pretraining.json"
    if pre_path.exists():
        parts += ["## Did pretraining learn?", "",
                  "Each backbone's last epoch: the contrastive loss beside ln(2N − 1), the loss of a network that "
                  "outputs one vector for everything; the pretext accuracy (a view's partner found first among the "
                  "2N − 1 candidates) beside its chance; the kNN monitor on validation women's crops (lesion vs "
                  "normal, no label trains) before and after. Curves: `02_pretrain/pretrain_curves.png`.", "",
                  pretraining_table(json.loads(pre_path.read_text())), ""]
    metrics_path = root / STAGES["evaluate"] / "metrics.json"
    if metrics_path.exists():
        m = json.loads(metrics_path.read_text())
        parts += [
            f"Task: **{m['task']}** on the held-out **{m['split']}** split of **{m['dataset']}** (profile "
            f"`{m['profile']}`). 95% CIs from {m['bootstrap_resamples']} bootstrap resamples of patients; "
            "the decision threshold was chosen on the validation split.", "",
            results_table(m), "",
            "The paper reports one accuracy for INbreast and MIAS without task, split or label fraction; our "
            "numbers come from a stated task and a patient-level split, so they are not the same measurement.",
            "",
        ]
        table = claim_table(m)
        if table:
            parts += ["## Beside the paper's claim", "", table, "", WHY_DIFFERENT, ""]
        parts += [
            f"git revision `{m.get('git_revision')}`, seed {m.get('seed')}, torch {m['versions'].get('torch')}, "
            f"lightly {m['versions'].get('lightly')}.", "",
        ]
        if m.get("ssl_gain"):
            parts += ["## What pretraining adds: the crop task", "",
                      "Is there a lesion in this crop, learnt from a fraction of the training women's labels "
                      "(stratified, nested, several draws of women below 100%) and tested on women no model of the "
                      "split saw; ROC AUC is the mean over the draws, the difference SSL − random is paired (the same "
                      "test crops and draws) with a 95% interval from resampling test women. Baselines: logistic "
                      "regression on the crop's pixels, mean or SD. The last rows read whole films with the crop "
                      "classifier (a film scores its highest crop). Figure: `04_evaluate/label_efficiency.png`; "
                      "numbers: `04_evaluate/ssl_gain.json`.", "", gain_table(m["ssl_gain"]), ""]
        table = cross_validation_table(m)
        if table:
            parts += ["## Cross-validation by patient", "",
                      "Out-of-fold test predictions pooled (each woman tested once, by a model that never saw "
                      "her films), with each fold's own validation threshold; a self-supervised backbone is "
                      "pretrained per fold, on that fold's training women only.", "", table, ""]
        if m.get("by_density"):
            parts += ["Metrics by breast density: `04_evaluate/by_density.png` and `by_density` in "
                      "`metrics.json`.", ""]
    loc_path = root / STAGES["gradcam"] / "localization.json"
    if loc_path.exists():
        parts += ["## Grad-CAM localization", "", localization_table(json.loads(loc_path.read_text())),
                  "", "Details and figures: `05_gradcam/`.", ""]
    parts += _provenance(root)
    parts += ["## Files", ""]
    for stage in STAGES.values():
        folder = root / stage
        if folder.exists():
            files = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".json", ".csv"))
            parts.append(f"- `{stage}/`: " + ", ".join(f"`{f}`" for f in files))
    path = root / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path


def _provenance(root: Path) -> list[str]:
    """Wall time per notebook (after ``reproduce``), machine, versions, seed, revision and the whole config."""
    metrics_path = root / STAGES["evaluate"] / "metrics.json"
    if not metrics_path.exists():
        return []
    m = json.loads(metrics_path.read_text())
    hw = m.get("hardware") or {}
    lines = ["## Provenance", ""]
    timings_path = root / "notebooks" / "timings.json"
    if timings_path.exists():
        timings = json.loads(timings_path.read_text())
        reused_path = timings_path.with_name("reused.json")
        reused = set(json.loads(reused_path.read_text())) if reused_path.exists() else set()
        total = sum(timings.values())
        lines.append(f"- Wall time: {total / 60:.1f} min (" + ", ".join(
            f"{name.split('_')[0]} {seconds:.0f} s" + (" with its stage reused" if name in reused else "")
            for name, seconds in timings.items()) + ")" + (
            "; a reused stage was up to date from an earlier run, so its notebook's time is the walk-through only"
            if reused else ""))
    machine = hw.get("cpu", m.get("processor", "?")) + (f", {hw['cpu_count']} cores" if hw.get("cpu_count") else "")
    if hw.get("gpu"):
        machine += f", GPU {hw['gpu']}"
    config = m.get("config", {})
    lines.append(f"- Precision: {hw.get('precision') or config.get('precision', '?')}")
    lines += [f"- Machine: {machine}",
              f"- git revision `{m.get('git_revision')}`, seed {m.get('seed')}",
              "- Versions: " + ", ".join(f"{k} {v}" for k, v in (m.get("versions") or {}).items()), "",
              "<details><summary>Configuration</summary>", "", "```json",
              json.dumps(portable_paths(m.get("config", {})), indent=1), "```", "", "</details>", ""]
    return lines


def portable_paths(config: dict) -> dict:
    """The config with its folders (``*_dir``) relative to the project (outside it: ``…/`` and the last two
    parts), so a report names no one's machine."""
    import os

    from mammo_utils.config import project_root

    root = str(project_root())
    out = {}
    for key, value in config.items():
        if isinstance(value, str) and key.endswith("_dir") and os.path.isabs(value):
            rel = os.path.relpath(value, root)
            value = rel if not rel.startswith("..") else "…/" + "/".join(Path(value).parts[-2:])
        out[key] = value
    return out


def localization_table(loc: dict) -> str:
    """Pointing game and energy inside the lesion per init and CAM method, beside the chance level."""

    def ci(v: dict | None) -> str:
        if not v or v.get("estimate") is None:
            return "n/a"
        return f"{v['estimate']:.3f} [{v['ci_low']:.3f}, {v['ci_high']:.3f}]"

    chance = loc.get("chance_level") or {}
    lines = [f"Test images with a located lesion: {loc.get('n_with_lesion', 0)}; chance level (lesion area / breast "
             f"area): {ci(chance)}. A flat map points nowhere: it is left out of both scores and counted.", "",
             "| model | CAM | pointing game | energy inside lesion | flat maps | ROAD |", "|---|---|---|---|---|---|"]
    for init, entry in (loc.get("inits") or {}).items():
        for method, m in (entry.get("methods") or {}).items():
            road = (m.get("road") or {}).get("mean")
            lines.append(f"| {init} | {method} | {ci(m.get('pointing_game'))} | {ci(m.get('energy_inside'))} | "
                         f"{m.get('n_flat', 'n/a')} | {'n/a' if road is None else f'{road:.3f}'} |")
    return "\n".join(lines)
