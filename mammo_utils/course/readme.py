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
    lines = ["| variant | what changes | steps | loss (ln(2N−1)) | pretext top-1 | "
             + " | ".join(f"AUC, {f.replace('pct', '%')} labels" for f in fractions) + " |",
             "|---|---|---|---|---|" + "---|" * len(fractions)]
    for r in rows:
        loss = f"{float(r['loss']):.2f} ({float(r['loss_constant_output']):.2f})" if r["loss"] else "—"
        top1 = f"{float(r['pretext_top1']):.2f}" if r["pretext_top1"] else "—"
        aucs = " | ".join(f"{float(r[f'auc_{f}']):.3f} ± {float(r[f'sd_{f}']):.3f}" for f in fractions)
        lines.append(f"| {r['variant']} | {r['change']} | {r['steps']} | {loss} | {top1} | {aucs} |")
    return "\n".join(lines)


def _protocols(study: dict) -> str:
    from mammo_utils.protocols.table import readme_section

    return readme_section(study, heading=False).rstrip()


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
