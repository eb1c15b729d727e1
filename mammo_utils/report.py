"""``report.md``: the results table (with the paper's claim beside it) and what each stage wrote."""

from __future__ import annotations

import json
import math
from pathlib import Path

from .config import Config
from .paths import STAGES, atomic_write_text, run_dir

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


def write_report(cfg: Config) -> Path:
    """Write ``runs/<profile>-<dataset>/report.md`` from what the stages wrote so far."""
    root = run_dir(cfg)
    parts = [f"# Run {cfg.profile}-{cfg.dataset}", ""]
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
            "", f"git revision `{m.get('git_revision')}`, seed {m.get('seed')}, torch {m['versions'].get('torch')}, "
            f"lightly {m['versions'].get('lightly')}.", "",
        ]
    loc_path = root / STAGES["explain"] / "localization.json"
    if loc_path.exists():
        parts += ["## Grad-CAM localization", "", "See `05_gradcam/localization.json` and its figures.", ""]
    parts += ["## Files", ""]
    for stage in STAGES.values():
        folder = root / stage
        if folder.exists():
            files = sorted(p.name for p in folder.iterdir() if p.suffix in (".png", ".json", ".csv"))
            parts.append(f"- `{stage}/`: " + ", ".join(f"`{f}`" for f in files))
    path = root / "report.md"
    atomic_write_text(path, "\n".join(parts) + "\n")
    return path
