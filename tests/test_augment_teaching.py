from mammo_utils.course import solve_notebook
from mammo_utils.course.pretrain import check_nt_xent
from mammo_utils.course.solutions.pretrain import my_nt_xent


def test_checks_say_pass_not_yet_or_fail_with_a_hint_and_never_raise(capsys):
    assert check_nt_xent(my_nt_xent)
    assert capsys.readouterr().out.startswith("PASS (2.1 NT-Xent)")
    assert not check_nt_xent(lambda a, b, t: my_nt_xent(a, b, t * 1.1))
    out = capsys.readouterr().out
    assert out.startswith("FAIL (2.1 NT-Xent)") and "Hint:" in out

    def unfinished(a, b, t):
        raise NotImplementedError

    assert not check_nt_xent(unfinished)
    assert capsys.readouterr().out.startswith("NOT YET (2.1 NT-Xent)")
    assert not check_nt_xent(lambda a, b, t: 1 / 0)
    assert "raised ZeroDivisionError" in capsys.readouterr().out


def test_solving_a_notebook_swaps_each_exercise_cell_for_an_import_of_its_solutions():
    nb = {"cells": [
        {"cell_type": "code", "metadata": {"tags": ["exercise"]},
         "source": ["def my_nt_xent(z0, z1, t):\n", "    raise NotImplementedError\n", "RUN_ABLATION = False\n"]},
        {"cell_type": "code", "metadata": {}, "source": ["x = 1\n"]}]}
    solved = solve_notebook(nb, "pretrain")
    assert solved["cells"][0]["source"] == (
        "from mammo_utils.course.solutions.pretrain import my_nt_xent, RUN_ABLATION  # noqa\n")
    assert solved["cells"][1] == nb["cells"][1] and "def my_nt_xent" in "".join(nb["cells"][0]["source"])
