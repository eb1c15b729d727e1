"""The course's notebooks: committed without outputs, shaped as lessons, and run with the solutions filled in.

``make test`` runs the notebooks as committed with nbmake (every exercise must say NOT YET: the environment
variable ``MAMMO_EXPECT_CHECKS`` makes each notebook's last cell check it). Here each notebook runs once more
through the ``mammo-contrastive`` Jupyter kernel, as JupyterLab would, with every exercise cell swapped for the
reference solutions: every check must say PASS.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from pathlib import Path

import pytest

from mammo_utils.course import exercise_names, solve_notebook

NOTEBOOK_DIR = Path(__file__).resolve().parent.parent / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("0*.ipynb"))
MIN_PROSE_WORDS = 1200
MAX_CODE_LINES = 15
MIN_EXERCISES = 3


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _source(cell: dict) -> str:
    return "".join(cell["source"])


def _tags(cell: dict) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def test_the_course_has_its_notebooks_in_order():
    """Six lessons under the stages' names (the package's folders and the CLI's commands use the same)."""
    assert [p.stem for p in NOTEBOOKS] == ["01_prepare", "02_pretrain", "03_finetune", "04_evaluate", "05_gradcam",
                                           "06_protocols"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs_with_one_parameters_cell_and_the_course_kernel(path):
    nb = _load(path)
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert sum("parameters" in _tags(c) for c in code) == 1
    assert nb["metadata"]["kernelspec"]["name"] == "mammo-contrastive"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_a_check_cell_shows_its_verdict_line_only(path):
    # A check returns True or False for the tests; as a cell's last expression Jupyter would print it under the
    # PASS / NOT YET line, so every check call that ends a cell ends with a semicolon.
    for cell in _load(path)["cells"]:
        last = "".join(cell["source"]).strip().splitlines()[-1:] if cell["cell_type"] == "code" else []
        if last and re.match(r"check_\w+\(", last[0]):
            assert last[0].split("#")[0].rstrip().endswith(";"), f"{path.name}: {last[0]}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_notebook_is_a_lesson(path):
    """An opening box, enough prose, short code cells, exercises with checks, the summary at the end."""
    nb = _load(path)
    opening = _source(nb["cells"][0]).lower()
    for part in ("learning objectives", "prerequisites", "time", "writes", "docs/course/"):
        assert part in opening, f"{path.name}: the opening box lacks {part!r}"
    prose = " ".join(_source(c) for c in nb["cells"] if c["cell_type"] == "markdown")
    words = len(re.findall(r"[A-Za-z][A-Za-z'-]+", re.sub(r"\$[^$]*\$", " ", prose)))
    assert words >= MIN_PROSE_WORDS, f"{path.name}: {words} words of prose"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    long = [(i, n) for i, c in enumerate(code) if (n := sum(bool(line.strip()) for line in _source(c).splitlines()))
            > MAX_CODE_LINES]
    assert not long, f"{path.name}: code cells longer than {MAX_CODE_LINES} lines: {long}"
    exercises = [c for c in code if "exercise" in _tags(c)]
    assert len(exercises) >= MIN_EXERCISES, f"{path.name}: {len(exercises)} exercises"
    topic = nb["metadata"]["mammo"]["topic"]
    checks = importlib.import_module(f"mammo_utils.course.{topic}")
    solutions = importlib.import_module(f"mammo_utils.course.solutions.{topic}")
    for cell in exercises:
        for name in exercise_names(_source(cell)):
            assert hasattr(solutions, name), f"{path.name}: no reference solution for {name}"
    called = re.findall(r"\b(check_\w+)\(", "\n".join(_source(c) for c in code))
    assert len(called) >= len(exercises) and all(hasattr(checks, name) for name in called)
    assert "summary()" in _source(code[-1]), f"{path.name}: the last cell must print the exercises' summary"


def _execute(nb: dict, kernel: str, env: dict[str, str]) -> dict:
    import nbformat
    from nbclient import NotebookClient

    node = nbformat.reads(json.dumps(nb), as_version=4)
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel process inherits them
    try:
        NotebookClient(node, kernel_name=kernel, timeout=900, resources={"metadata": {"path": str(NOTEBOOK_DIR)}}
                       ).execute()
    finally:
        for k, v in old.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)
    return json.loads(nbformat.writes(node))


def _printed(nb: dict) -> str:
    return "\n".join(o.get("text", "") if isinstance(o.get("text", ""), str) else "".join(o["text"])
                     for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])
                     if o.get("output_type") == "stream")


@pytest.fixture(scope="module")
def course_env(tmp_path_factory):
    """The settings ``make test`` gives the notebooks (smoke profile, synthetic data), or a scratch copy."""
    from mammo_utils.course.notebook import ensure_kernel

    base = tmp_path_factory.mktemp("course")
    env = {"MAMMO_PROFILE": os.environ.get("MAMMO_PROFILE", "smoke"),
           "MAMMO_DATASET": os.environ.get("MAMMO_DATASET", "synthetic"),
           "MAMMO_RUNS_DIR": os.environ.get("MAMMO_RUNS_DIR", str(base / "runs")),
           "MAMMO_DATA_DIR": os.environ.get("MAMMO_DATA_DIR", str(base / "data")),
           "MAMMO_PROGRESS": "0", "MAMMO_EXPECT_CHECKS": "PASS"}
    return ensure_kernel(), env


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_with_the_solutions_filled_in_every_check_passes(path, course_env):
    """Run through the installed kernel, by name, as JupyterLab runs it; the summary cell fails on anything
    but PASS (``MAMMO_EXPECT_CHECKS``)."""
    kernel, env = course_env
    nb = _load(path)
    solved = _execute(solve_notebook(nb, nb["metadata"]["mammo"]["topic"]), kernel, env)
    printed = _printed(solved)
    assert not re.search(r"^(NOT YET|FAIL) \(", printed, flags=re.M)
    n_exercises = sum("exercise" in _tags(c) for c in nb["cells"])
    assert len(re.findall(r"^PASS \(", printed, flags=re.M)) >= n_exercises
