"""The package's shape, as ARCHITECTURE.md promises it: a folder per stage, plumbing that never imports a stage,
no import cycle (function-local and type-checking imports count too) and no module over 400 lines."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mammo_utils"
STAGES = ("prepare", "pretrain", "finetune", "evaluate", "gradcam", "protocols")
# The layers below the stages: they may import each other, never a stage (nor the course, which drives stages).
LOWER = ("errors", "config", "profiles", "runs", "models", "plots", "report")
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    """Every mammo_utils module ``path`` imports, wherever the import statement is (top level, inside a
    function, under ``if TYPE_CHECKING``)."""
    tree = ast.parse(path.read_text())
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mammo_utils")}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("mammo_utils"):
                found.add(base)
                found |= {f"{base}.{a.name}" for a in node.names}
    return found


MODULES = {module_name(p): p for p in PACKAGE.rglob("*.py")}


def resolved(name: str) -> str | None:
    """The module a dotted import name refers to (``from x import f`` names ``x.f``, which is not a module)."""
    while name and name not in MODULES:
        name = name.rsplit(".", 1)[0] if "." in name else ""
    return name or None


GRAPH = {m: {r for r in map(resolved, imports(p)) if r and r != m} for m, p in MODULES.items()}


def top(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


def test_there_is_one_folder_per_stage_and_a_runs_folder_below_them():
    for name in (*STAGES, "runs", "course"):
        assert (PACKAGE / name / "__init__.py").exists(), f"mammo_utils/{name}/ is missing"
    for name in STAGES[:5]:
        assert (PACKAGE / name / "stage.py").exists(), f"stage {name} has no stage.py"


def test_no_lower_layer_imports_a_stage_or_the_course():
    bad = [(m, d) for m, deps in GRAPH.items() if top(m) in LOWER
           for d in deps if top(d) in (*STAGES, "course") and not d.endswith(("sources", "methods"))]
    assert not bad, f"plumbing imports a stage: {bad}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(m: str, stack: list[str]) -> bool:
        state[m] = 1
        for d in sorted(GRAPH[m]):
            if state.get(d) == 1:
                cycle.extend(stack[stack.index(d):] + [m, d] if d in stack else [m, d])
                return True
            if not state.get(d) and visit(d, [*stack, d]):
                return True
        state[m] = 2
        return False

    for m in sorted(GRAPH):
        if not state.get(m) and visit(m, [m]):
            break
    assert not cycle, f"import cycle: {' -> '.join(cycle)}"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_is_over_400_lines(module):
    n = len(MODULES[module].read_text().splitlines())
    assert n <= MAX_LINES, f"{module} has {n} lines: split it by concept"


def test_the_cycle_finder_finds_a_cycle():
    """The guard above fails when it should: a made-up pair of modules importing each other is a cycle."""
    global GRAPH
    saved = GRAPH
    try:
        GRAPH = {**saved, "mammo_utils.x": {"mammo_utils.y"}, "mammo_utils.y": {"mammo_utils.x"}}
        with pytest.raises(AssertionError, match="import cycle"):
            test_no_import_cycle()
    finally:
        GRAPH = saved
