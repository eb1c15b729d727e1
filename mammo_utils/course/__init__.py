"""The course's exercises: check functions that say PASS, NOT YET or FAIL (with a hint) and never stop a
notebook, reference solutions kept apart from the notebooks, and small helpers the notebooks use to show things.

How an exercise works in a notebook: a code cell tagged ``exercise`` defines a stub (a function that raises
``NotImplementedError``, or a setting such as ``RUN_ABLATION = False``); the next cell calls a check from the
notebook's module here (``mammo_utils.course.<topic>``), which compares the learner's answer with the
package's own implementation (or the library's) and prints one line. The reference solutions live in
``mammo_utils.course.solutions.<topic>``, one module per notebook, under the same names as the stubs:
:func:`solve_notebook` swaps every ``exercise`` cell for an import of them, which is how the tests run each
notebook with the solutions filled in.

A check function is written as a plain function that asserts, decorated with :func:`check`::

    @check("2.1 NT-Xent", hint="Each view's positive is the other view of its image; every other view of the "
           "batch is a negative.", recipe="Normalise z0 and z1, stack them, ...")
    def check_nt_xent(fn):
        assert torch.allclose(fn(z0, z1, 0.5), NTXentLoss(0.5)(z0, z1)), "your loss differs from lightly's"
        return "matches lightly's NTXentLoss on random batches"

Hints come in two stages: a wrong answer first gets the ``hint`` (the idea to think about), and from the second
wrong answer to the same exercise in this kernel also the ``recipe`` (the steps), so that a first try is never
spoiled.
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable

PASS, NOT_YET, FAIL = "PASS", "NOT YET", "FAIL"


def check(exercise: str, hint: str, recipe: str) -> Callable:
    """Turn a function that asserts into a notebook check: prints ``PASS``, ``NOT YET`` (the stub still raises
    ``NotImplementedError`` or returns None) or ``FAIL`` with a hint; returns True on PASS; never raises.

    Args:
        exercise: the exercise's number and name, e.g. ``"1.2 Patient-level split"``.
        hint: the idea, shown with the first wrong answer: what to think about, not what to type.
        recipe: the steps, shown from the second wrong answer to this exercise on (:data:`FAILURES`).
    """

    def decorate(body: Callable) -> Callable:
        @functools.wraps(body)
        def run(*args, **kwargs) -> bool:
            try:
                detail = body(*args, **kwargs)
            except NotImplementedError:
                return _say(NOT_YET, exercise, "the stub is untouched: write your answer in the cell above and run "
                            "both cells again.")
            except _NotYet as exc:
                return _say(NOT_YET, exercise, str(exc))
            except AssertionError as exc:
                return _fail(exercise, f"{exc or 'a check failed'}.", hint, recipe)
            except Exception as exc:  # a learner's bug must not stop the notebook
                return _fail(exercise, f"your code raised {type(exc).__name__}: {exc}.", hint, recipe)
            return _say(PASS, exercise, detail or "well done.")

        run.exercise, run.hint, run.recipe = exercise, hint, recipe
        return run

    return decorate


FAILURES: dict[str, int] = {}  # exercise -> wrong answers so far in this kernel (the recipe comes at the second)


def _fail(exercise: str, what: str, hint: str, recipe: str) -> bool:
    FAILURES[exercise] = tries = FAILURES.get(exercise, 0) + 1
    if tries < 2:
        return _say(FAIL, exercise, f"{what} Hint: {hint} (A second wrong try adds the steps.)")
    return _say(FAIL, exercise, f"{what} Hint: {hint} Steps: {recipe}")


class _NotYet(Exception):
    """Raised inside a check when the learner's answer is still the stub's placeholder."""


def require_answer(value: object, what: str = "your answer") -> object:
    """Inside a check: ``NOT YET`` when ``value`` is None (a stub's placeholder), else ``value``."""
    if value is None:
        raise _NotYet(f"{what} is still None: fill it in the cell above and run both cells again.")
    return value


def changed_settings(first: object, variant: object) -> dict[str, tuple[object, object]]:
    """The settings (``section.name``) in which two configurations differ, with the first's and the variant's
    values; the variant's name is left out (it only names the variant's run folder)."""

    def flat(cfg: object) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in cfg.to_dict().items():
            out.update({f"{key}.{k}": v for k, v in value.items()} if isinstance(value, dict) else {key: value})
        return out

    a, b = flat(first), flat(variant)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if k != "variant" and a.get(k) != b.get(k)}


def require_one_change(first: object, variant: object, asked: str, may_differ: tuple[str, ...], how: str) -> str:
    """Inside an ablation check: the variant's configuration differs from the first run's in the setting the
    exercise names (``asked``) and in nothing else but ``may_differ`` (settings that only decide which extra runs
    a stage makes); returns ``"asked: old -> new"``. ``how`` says how to set it (the exercise's override)."""
    changed = changed_settings(first, variant)
    listed = "; ".join(f"{k}: {a} -> {b}" for k, (a, b) in changed.items()) or "nothing"
    assert asked in changed, (f"the exercise changes {asked} ({how}); your variant changes {listed}")
    others = {k: v for k, v in changed.items() if k != asked and k not in may_differ}
    assert not others, (f"your variant changes {asked} and also {'; '.join(f'{k}: {a} -> {b}' for k, (a, b) in others.items())}: "
                        "with two changes at once the comparison cannot say which one made the difference. Change "
                        f"{asked} only ({how})")
    old, new = changed[asked]
    return f"{asked}: {old} -> {new}"


RESULTS: dict[str, str] = {}  # exercise -> its latest status in this kernel (for :func:`summary`)


def _say(status: str, exercise: str, message: str) -> bool:
    RESULTS[exercise] = status
    print(f"{status} ({exercise}): {message}")
    return status == PASS


def summary() -> dict[str, str]:
    """Print where each exercise of this session stands; the last cell of every notebook calls it.

    When ``MAMMO_EXPECT_CHECKS`` is set (the tests set it: ``NOT YET`` for the notebooks as committed, ``PASS``
    with the solutions filled in), an exercise in any other state stops the notebook, so a test that runs it
    fails. A learner never sets it.
    """
    import os

    counts = {s: sum(v == s for v in RESULTS.values()) for s in (PASS, NOT_YET, FAIL)}
    print(f"{len(RESULTS)} exercises checked: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    for exercise, status in RESULTS.items():
        print(f"  {status:8} {exercise}")
    expected = os.environ.get("MAMMO_EXPECT_CHECKS")
    if expected:
        wrong = {e: s for e, s in RESULTS.items() if s != expected}
        if wrong or not RESULTS:
            raise AssertionError(f"expected every check to say {expected}; got {wrong or 'no check at all'}")
    return dict(RESULTS)


def show_source(obj: object) -> object:
    """The source code of a package function or class, highlighted, for a notebook to display."""
    from IPython.display import Code

    return Code(inspect.getsource(obj), language="python")


def exercise_names(source: str) -> list[str]:
    """The names an exercise cell defines at top level (functions, classes and assigned variables)."""
    names = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.append(node.name)
        elif isinstance(node, ast.Assign):
            names += [t.id for t in node.targets if isinstance(t, ast.Name)]
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.append(node.target.id)
    return names


def solve_notebook(nb: dict, topic: str) -> dict:
    """A copy of a notebook (nbformat JSON) whose ``exercise`` cells import the reference solutions of
    ``mammo_utils.course.solutions.<topic>`` instead of defining the stubs."""
    import copy

    nb = copy.deepcopy(nb)
    for cell in nb["cells"]:
        if cell["cell_type"] == "code" and "exercise" in cell.get("metadata", {}).get("tags", []):
            source = "".join(cell["source"])
            names = exercise_names(source)
            cell["source"] = f"from mammo_utils.course.solutions.{topic} import {', '.join(names)}  # noqa\n"
    return nb
