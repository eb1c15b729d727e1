"""The README's results tables, generated from the published JSON so that no number in it is typed by hand.

A block of the README between ``<!-- generated: KIND RUN -->`` and ``<!-- end generated -->`` is the table of KIND
rendered from ``docs/results/RUN/`` (``pretraining``: ``pretraining.json``; ``ssl_gain``: ``ssl_gain.json``;
``claim``: ``metrics.json``; ``recipe``: ``recipe_search.csv``; ``protocols``: ``protocols.json``). :func:`update_readme` rewrites every block (``publish`` calls it), and
``tests/test_readme.py`` checks that the README holds exactly what the published files say.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

from mammo_utils.report import claim_table, gain_table, pretraining_table

BLOCK = re.compile(r"(<!-- generated: (\w+) ([\w.-]+) -->\n)(.*?)(<!-- end generated -->)", re.S)


def _gain_summary(gain: list[dict]) -> str:
    """The crop task's rows only (the film rows go to the claim table)."""
    return gain_table([r for r in gain if r["task"].startswith("lesion")] +
                      [r for r in gain if not r["task"].startswith("lesion")])


def _claim(metrics: dict) -> str:
    return claim_table(metrics)


def recipe_table(rows: list[dict]) -> str:
    """Markdown table of ``recipe_search.csv``: each variant's last loss beside ln(2N − 1), its pretext accuracy, and
    the probe's validation ROC AUC (mean ± SD over draws of women) at each label fraction."""
    fractions = [c.removeprefix("auc_") for c in rows[0] if c.startswith("auc_")]
    lines = ["| variant | what changes | steps | loss (its constant-output level) | pretext top-1 | kNN, untrained → "
             "trained | " + " | ".join(f"AUC, {f.replace('pct', '%')} labels" for f in fractions) + " |",
             "|---|---|---|---|---|---|" + "---|" * len(fractions)]
    for r in rows:
        loss = f"{float(r['loss']):.2f} ({float(r['loss_constant_output']):.2f})" if r["loss"] else "—"
        top1 = f"{float(r['pretext_top1']):.3f}" if r["pretext_top1"] else "—"
        knn = f"{float(r['knn_untrained']):.3f} → {float(r['knn']):.3f}" if r.get("knn") else "—"
        aucs = " | ".join(f"{float(r[f'auc_{f}']):.3f} ± {float(r[f'sd_{f}']):.3f}" for f in fractions)
        lines.append(f"| {r['variant']} | {r['change']} | {r['steps']} | {loss} | {top1} | {knn} | {aucs} |")
    return "\n".join(lines)


def _protocols(study: dict) -> str:
    from mammo_utils.protocols.table import readme_section

    return readme_section(study, heading=False).rstrip()


def budget_table(budget: dict) -> str:
    """The budget curve as a table: the SimCLR probe's ROC AUC [95% CI] after each number of pretraining steps (0:
    the random initialisation), on the validation and the test women, with a tenth of the women and with all of
    them, and the raw-pixel baseline beside it."""
    rows = budget["rows"]
    cols = [(f, s) for f in (0.1, 1.0) for s in ("val", "test")]

    def cell(init: str, step: int, fraction: float, split: str) -> str:
        r = next((r for r in rows if r["init"] == init and r["step"] == step and r["split"] == split
                  and abs(r["label_fraction"] - fraction) < 1e-9), None)
        return "—" if r is None else f"{r['roc_auc']:.3f} [{r['ci_low']:.2f}, {r['ci_high']:.2f}]"

    women = {s: next((r["n_women"] for r in rows if r["split"] == s), 0) for s in ("val", "test")}
    head = " | ".join(f"{'a tenth' if f < 1 else 'all'} of the women, {s} ({women[s]})" for f, s in cols)
    lines = [f"| pretraining steps | {head} |", "|---" * (len(cols) + 1) + "|"]
    for step in budget["steps"]:
        lines.append(f"| {step}{' (random init)' if step == 0 else ''} | "
                     + " | ".join(cell("simclr", step, f, s) for f, s in cols) + " |")
    lines.append("| pixels, no network | " + " | ".join(cell("pixels", -1, f, s) for f, s in cols) + " |")
    return "\n".join(lines)


def _read(path: Path):
    if path.suffix == ".csv":
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    return json.loads(path.read_text())


RENDERERS: dict[str, tuple[str, Callable[[dict | list], str]]] = {
    "pretraining": ("pretraining.json", pretraining_table),
    "ssl_gain": ("ssl_gain.json", _gain_summary),
    "claim": ("metrics.json", _claim),
    "recipe": ("recipe_search.csv", recipe_table),
    "protocols": ("protocols.json", _protocols),
    "budget": ("budget.json", budget_table),
}


def render(kind: str, run: str, results: Path) -> str:
    """The table of ``kind`` from ``results/run/``; a note when the file is not published."""
    name, renderer = RENDERERS[kind]
    path = Path(results) / run / name
    if not path.exists():
        return f"*Not published yet: `docs/results/{run}/{name}`.*"
    return renderer(_read(path))


def update_readme(readme: Path, results: Path) -> bool:
    """Rewrite every generated block of ``readme`` from ``results``; returns whether anything changed."""
    text = Path(readme).read_text()
    new = BLOCK.sub(lambda m: f"{m.group(1)}{render(m.group(2), m.group(3), results)}\n{m.group(5)}", text)
    if new != text:
        Path(readme).write_text(new)
    return new != text
