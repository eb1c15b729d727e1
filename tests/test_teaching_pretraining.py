"""Notebook 02's checks: PASS with the reference solutions, NOT YET with the stubs, FAIL (with a pointed hint)
for the mistakes learners typically make."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier

from mammo_utils.config import load_config
from mammo_utils.course import solve_notebook
from mammo_utils.course.pretrain import (
    check_ablation,
    check_knn_balanced_accuracy,
    check_nt_xent,
    check_random_embedding_loss,
    check_training_step,
)
from mammo_utils.course.solutions import pretrain as solutions
from mammo_utils.pretrain.stage import SECTIONS
from mammo_utils.runs.paths import stage_dir
from mammo_utils.runs.stage import stage_key


def _line(capsys) -> str:
    return capsys.readouterr().out


def _stub(*args):
    raise NotImplementedError


def test_nt_xent_fails_without_normalising_or_without_masking_each_view_with_itself(capsys):
    def unnormalised(z0, z1, t):
        n = len(z0)
        z = torch.cat([z0, z1])
        logits = (z @ z.T / t).masked_fill(torch.eye(2 * n, dtype=torch.bool), float("-inf"))
        return F.cross_entropy(logits, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    def unmasked(z0, z1, t):
        n = len(z0)
        z = F.normalize(torch.cat([z0, z1]), dim=1)
        return F.cross_entropy(z @ z.T / t, torch.cat([torch.arange(n, 2 * n), torch.arange(n)]))

    for wrong in (unnormalised, unmasked):
        assert not check_nt_xent(wrong)
        out = _line(capsys)
        assert out.startswith("FAIL (2.1 NT-Xent)") and "Hint:" in out


def test_random_embedding_loss(capsys):
    assert check_random_embedding_loss(solutions.my_random_embedding_loss)
    assert _line(capsys).startswith("PASS (2.2 Loss of random embeddings)")
    assert not check_random_embedding_loss(_stub)
    assert _line(capsys).startswith("NOT YET (2.2")
    assert not check_random_embedding_loss(lambda n, t: math.log(n))
    out = _line(capsys)
    assert out.startswith("FAIL (2.2") and "log N counts only N candidates" in out
    assert not check_random_embedding_loss(lambda n, t: math.log(2 * n))
    assert "log 2N counts the view itself" in _line(capsys)
    assert not check_random_embedding_loss(lambda n, t: math.log(2 * n - 1) / t)  # the temperature drops out
    out = _line(capsys)
    assert out.startswith("FAIL (2.2") and "lightly's NT-Xent of random" in out


def test_the_reference_answer_to_random_embeddings_is_what_lightly_averages():
    from mammo_utils.course.pretrain import mean_random_loss

    assert mean_random_loss(8, 1.0, dim=2048, draws=50) == pytest.approx(math.log(15), abs=0.01)


def test_training_step(capsys):
    assert check_training_step(solutions.my_training_step)
    assert _line(capsys).startswith("PASS (2.3 One training step)")
    assert not check_training_step(_stub)
    assert _line(capsys).startswith("NOT YET (2.3")

    def no_zero_grad(module, optimizer, x0, x1):
        loss = module.contrastive_loss(x0, x1)
        loss.backward()
        optimizer.step()
        return loss.item()

    def no_step(module, optimizer, x0, x1):
        optimizer.zero_grad()
        loss = module.contrastive_loss(x0, x1)
        loss.backward()
        return loss.item()

    def step_before_backward(module, optimizer, x0, x1):
        optimizer.zero_grad()
        optimizer.step()
        loss = module.contrastive_loss(x0, x1)
        loss.backward()
        return loss.item()

    def no_return(module, optimizer, x0, x1):
        solutions.my_training_step(module, optimizer, x0, x1)

    def through_training_step(module, optimizer, x0, x1):  # the base class's route is right too
        optimizer.zero_grad()
        loss = module.training_step(((x0, x1), None), 0)
        loss.backward()
        optimizer.step()
        return loss

    for wrong, says in ((no_zero_grad, "optimizer.zero_grad()"), (no_step, "no parameter moved"),
                        (step_before_backward, "no parameter moved"), (no_return, "returned None")):
        assert not check_training_step(wrong)
        out = _line(capsys)
        assert out.startswith("FAIL (2.3") and says in out, out
    assert check_training_step(through_training_step)
    assert _line(capsys).startswith("PASS (2.3")


def _sklearn_knn(metric: str, weights: str, score):
    def knn(bank, bank_y, query, query_y, k=10):
        model = KNeighborsClassifier(n_neighbors=k, metric=metric, weights=weights).fit(bank, bank_y)
        return score(query_y, model.predict(query))

    return knn


def test_knn_monitor(capsys):
    assert check_knn_balanced_accuracy(solutions.my_knn_balanced_accuracy)
    assert _line(capsys).startswith("PASS (2.4 kNN monitor)")
    assert not check_knn_balanced_accuracy(_stub)
    assert _line(capsys).startswith("NOT YET (2.4")
    for wrong, says in ((_sklearn_knn("cosine", "distance", accuracy_score), "plain accuracy"),
                        (_sklearn_knn("euclidean", "distance", balanced_accuracy_score), "Euclidean"),
                        (_sklearn_knn("cosine", "uniform", balanced_accuracy_score), "votes equally"),
                        (lambda *a, k=10: 0.5, "the monitor")):
        assert not check_knn_balanced_accuracy(wrong)
        out = _line(capsys)
        assert out.startswith("FAIL (2.4") and says in out, out


def _fake_run(cfg, loss: list[float], knn: list[float]) -> None:
    """What run_pretrain leaves behind, as far as the ablation check reads it."""
    out = stage_dir(cfg, "pretrain")
    # read_history's columns: row 0 is the untrained network (a kNN value, no loss yet)
    pd.DataFrame({"epoch": range(len(loss) + 1), "step": [10 * e for e in range(len(loss) + 1)],
                  "loss": [None, *loss], "loss_constant_output": [None] + [5.5] * len(loss),
                  "pretext_top1": [None] + [0.1] * len(loss), "knn": [0.5, *knn]}).to_csv(out / "history.csv",
                                                                                          index=False)
    (out / "stage.json").write_text(json.dumps({"key": stage_key(cfg, "pretrain", SECTIONS),
                                                "config": cfg.to_dict()}))


def test_ablation(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("MAMMO_OVERRIDES", raising=False)
    cfg = load_config("smoke", "synthetic", runs_dir=str(tmp_path))
    moco = load_config("smoke", "synthetic", runs_dir=str(tmp_path), variant="moco",
                       overrides=["pretrain.method=moco", "finetune.cv=false"])  # as notebook 02's cell builds it
    assert not check_ablation(False, cfg, moco)
    assert _line(capsys).startswith("NOT YET (2.5 Ablation)")
    assert not check_ablation(True, cfg, moco)
    assert "holds no history.csv" in _line(capsys)
    _fake_run(cfg, [3.4, 3.1], [0.5, 0.55])
    _fake_run(moco, [4.8, 4.5], [0.5, 0.6])
    assert not check_ablation(False, cfg, moco)  # a variant left on disk is not the learner's answer
    assert _line(capsys).startswith("NOT YET (2.5 Ablation)")
    assert check_ablation(solutions.RUN_ABLATION, cfg, moco)
    out = _line(capsys)
    assert out.startswith("PASS (2.5") and "pretrain.method: simclr -> moco" in out and "0.600 (moco)" in out
    other = load_config("smoke", "synthetic", runs_dir=str(tmp_path), overrides=["pretrain.epochs=9"])
    _fake_run(other, [3.4, 3.2], [0.5, 0.5])  # the first run's folder now holds a run of other settings
    assert not check_ablation(True, cfg, moco)
    assert "run it again" in _line(capsys)


@pytest.mark.parametrize(("overrides", "says"), [
    ([], "your variant changes nothing"),  # the override forgotten
    (["pretrain.epochs=3"], "changes pretrain.method"),  # named "moco", but another setting changed instead
    (["pretrain.method=moco", "pretrain.temperature=0.5"], "also pretrain.temperature"),  # two changes at once
    (["pretrain.method=moco", "pretrain.batch_size=6"], "also pretrain.batch_size"),
    (["pretrain.method=moco", "augment.blur_prob=0.0"], "cannot say which one"),
])
def test_an_ablation_that_changes_something_else_fails(tmp_path, capsys, monkeypatch, overrides, says):
    """Whatever ran: the variant must differ from the first run in the method, and only in it."""
    monkeypatch.delenv("MAMMO_OVERRIDES", raising=False)
    cfg = load_config("smoke", "synthetic", runs_dir=str(tmp_path))
    wrong = load_config("smoke", "synthetic", runs_dir=str(tmp_path), variant="moco", overrides=overrides)
    _fake_run(cfg, [3.4, 3.1], [0.5, 0.55])
    _fake_run(wrong, [4.8, 4.5], [0.5, 0.6])
    assert not check_ablation(True, cfg, wrong)
    out = _line(capsys)
    assert out.startswith("FAIL (2.5") and says in out, out


def test_the_notebook_s_exercise_cells_have_a_solution_each():
    from pathlib import Path

    nb = json.loads((Path(__file__).resolve().parent.parent / "notebooks" / "02_pretrain.ipynb")
                    .read_text())
    solved = solve_notebook(nb, "pretrain")
    imports = [c["source"] for c in solved["cells"] if "exercise" in c.get("metadata", {}).get("tags", [])]
    assert len(imports) >= 5
    names = [n.strip() for line in imports for n in line.split(" import ", 1)[1].split("#")[0].split(",")]
    assert all(hasattr(solutions, n) for n in names), names
    assert np.isfinite(solutions.my_random_embedding_loss(4, 0.5))
