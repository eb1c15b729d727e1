"""The README's results come from the published files: every generated block holds exactly what its file renders
to, and no placeholder is left for a reader to find."""

import re
import shutil
from pathlib import Path

from mammo_utils.course.readme import BLOCK, render, update_readme

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "docs" / "results"


def test_every_generated_block_is_what_its_published_file_says(tmp_path):
    readme = tmp_path / "README.md"
    shutil.copy(ROOT / "README.md", readme)
    blocks = BLOCK.findall(readme.read_text())
    assert {kind for _, kind, _, _, _ in blocks} >= {"pretraining", "ssl_gain", "claim", "recipe", "protocols"}
    assert not update_readme(readme, RESULTS), "README.md is stale: run `python -m mammo_utils publish` again"
    for _, kind, run, body, _ in blocks:
        assert body.strip() == render(kind, run, RESULTS).strip(), (kind, run)


def test_no_placeholder_is_left_in_the_readme_or_the_notebooks():
    texts = [ROOT / "README.md", *sorted((ROOT / "notebooks").glob("*.ipynb"))]
    for path in texts:
        left = re.findall(r"\b(?:TIME_[A-Z]+|[A-Z]+_(?:TABLE|SECTION))\b", path.read_text())
        assert not left, f"{path.name} still holds {sorted(set(left))}"


def test_a_changed_file_changes_the_readme(tmp_path):
    results = tmp_path / "results"
    (results / "recipe").mkdir(parents=True)
    shutil.copy(RESULTS / "demo-mias" / "recipe_search.csv", results / "recipe" / "recipe_search.csv")
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- generated: recipe recipe -->\nold\n<!-- end generated -->\ny\n")
    assert update_readme(readme, results)
    text = readme.read_text()
    assert "old" not in text and text.startswith("x\n") and text.endswith("y\n") and "| variant |" in text
    csv = results / "recipe" / "recipe_search.csv"
    lines = csv.read_text().splitlines()
    lines[1] = lines[1].replace(lines[1].split(",")[0], "a-new-variant", 1)
    csv.write_text("\n".join(lines) + "\n")
    assert update_readme(readme, results) and "a-new-variant" in readme.read_text()
    assert not update_readme(readme, results)  # written once, then stable
    (results / "gone").mkdir()
    readme.write_text("<!-- generated: pretraining gone -->\n<!-- end generated -->\n")
    update_readme(readme, results)
    assert "Not published yet: `docs/results/gone/pretraining.json`" in readme.read_text()


def test_the_budget_table_reads_each_step_and_the_pixel_baseline_from_budget_json():
    from mammo_utils.course.readme import budget_table

    def row(init, step, fraction, split, auc):
        return {"init": init, "step": step, "label_fraction": fraction, "split": split, "roc_auc": auc,
                "ci_low": auc - 0.1, "ci_high": auc + 0.1, "n_women": 24 if split == "val" else 40}

    rows = [row("simclr", s, f, sp, 0.7 + s / 10_000 + f / 100 + (sp == "test") / 1000)
            for s in (0, 500) for f in (0.1, 1.0) for sp in ("val", "test")]
    rows += [row("pixels", -1, f, sp, 0.6) for f in (0.1, 1.0) for sp in ("val", "test")]
    table = budget_table({"steps": [0, 500], "rows": rows}).splitlines()
    assert "test (40)" in table[0] and len(table) == 2 + 2 + 1
    assert table[2].startswith("| 0 (random init) | 0.701 [0.60, 0.80] | 0.702 ")
    assert table[3].startswith("| 500 | 0.751 ") and "| 0.761 " in table[3]
    assert table[4] == "| pixels, no network |" + " 0.600 [0.50, 0.70] |" * 4
