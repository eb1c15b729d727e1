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

    @check("2.1 NT-Xent", hint="Normalise the embeddings first; the positive of view i is view i + N.")
    def check_nt_xent(fn):
        assert torch.allclose(fn(z0, z1, 0.5), NTXentLoss(0.5)(z0, z1)), "your loss differs from lightly's"
        return "matches lightly's NTXentLoss on random batches"
"""

from __future__ import annotations

import ast
import functools
import inspect
from collections.abc import Callable

PASS, NOT_YET, FAIL = "PASS", "NOT YET", "FAIL"


def check(exercise: str, hint: str) -> Callable:
    """Turn a function that asserts into a notebook check: prints ``PASS``, ``NOT YET`` (the stub still raises
    ``NotImplementedError`` or returns None) or ``FAIL`` with the hint; returns True on PASS; never raises.

    Args:
        exercise: the exercise's number and name, e.g. ``"1.2 Patient-level split"``.
        hint: one or two sentences that point the way without giving the answer.
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
                return _say(FAIL, exercise, f"{exc or 'a check failed'}. Hint: {hint}")
            except Exception as exc:  # a learner's bug must not stop the notebook
                return _say(FAIL, exercise, f"your code raised {type(exc).__name__}: {exc}. Hint: {hint}")
            return _say(PASS, exercise, detail or "well done.")

        run.exercise = exercise
        return run

    return decorate


class _NotYet(Exception):
    """Raised inside a check when the learner's answer is still the stub's placeholder."""


def require_answer(value: object, what: str = "your answer") -> object:
    """Inside a check: ``NOT YET`` when ``value`` is None (a stub's placeholder), else ``value``."""
    if value is None:
        raise _NotYet(f"{what} is still None: fill it in the cell above and run both cells again.")
    return value


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
