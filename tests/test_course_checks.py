"""The course's checks as a whole: 26 exercises, each with a hint (the idea) and a recipe (the steps), the steps
shown only from the second wrong answer on, and a check that never stops a notebook."""

from __future__ import annotations

import importlib

import pytest

from mammo_utils.course import FAILURES, check

TOPICS = ("prepare", "pretrain", "finetune", "evaluate", "gradcam", "protocols")


def _checks() -> list:
    found = []
    for topic in TOPICS:
        module = importlib.import_module(f"mammo_utils.course.{topic}")
        found += [f for name, f in vars(module).items() if name.startswith("check_") and hasattr(f, "exercise")]
    return found


def test_every_exercise_has_a_check_with_a_hint_and_separate_steps():
    checks = _checks()
    numbers = sorted(c.exercise.split()[0] for c in checks)
    assert numbers == [f"{n}.{k}" for n, last in zip(range(1, 7), (4, 5, 5, 4, 4, 4), strict=True)
                       for k in range(1, last + 1)]
    for c in checks:
        assert c.hint and c.recipe and c.hint != c.recipe, c.exercise
        assert c.recipe not in c.hint, c.exercise


@pytest.mark.parametrize(("exercise", "spoilers"), [
    ("1.1", ["0.1", "ndimage.label", "binary_fill_holes"]),
    ("2.3", ["zero_grad", "backward()", "step()", "item()"]),
    ("3.3", ["zero_grad", "backward()", "squeeze", "item()"]),
    ("5.1", ["mean", "relu", "sum_k", "dim="]),
    ("6.4", ["norm", "@", "matrix product", ".T"]),
])
def test_the_first_hint_does_not_give_the_solution_away(exercise, spoilers):
    (found,) = [c for c in _checks() if c.exercise.startswith(exercise + " ")]
    assert not [s for s in spoilers if s.lower() in found.hint.lower()], found.hint


def test_the_steps_come_with_the_second_wrong_answer(capsys):
    @check("9.9 Toy", hint="think about the sign", recipe="return -x")
    def check_toy(fn):
        if fn(2) != -2:  # (a plain raise: pytest rewrites the messages of asserts in test modules)
            raise AssertionError("not the negation")
        return "negated"

    assert not check_toy(lambda x: x)
    first = capsys.readouterr().out
    assert first.startswith("FAIL (9.9 Toy): not the negation.") and "Hint: think about the sign" in first
    assert "return -x" not in first and "second wrong try" in first
    assert not check_toy(lambda x: 1 / 0)  # an answer that raises is a wrong try too
    second = capsys.readouterr().out
    assert "raised ZeroDivisionError" in second and "Hint: think about the sign Steps: return -x" in second
    assert FAILURES["9.9 Toy"] == 2
    assert check_toy(lambda x: -x) and capsys.readouterr().out.startswith("PASS (9.9 Toy): negated")


def test_a_stub_is_not_a_wrong_try(capsys):
    @check("9.8 Toy", hint="h", recipe="r")
    def check_toy(fn):
        return fn()

    def stub():
        raise NotImplementedError

    assert not check_toy(stub) and not check_toy(stub)
    assert capsys.readouterr().out.count("NOT YET (9.8 Toy)") == 2
    assert "9.8 Toy" not in FAILURES
