"""Checks of notebook 02's exercises (contrastive pretraining).

Each check compares the learner's answer with lightly's loss, the package's own code (the kNN monitor of
:mod:`mammo_utils.pretrain.methods.base`, the stage of :mod:`mammo_utils.pretrain.stage`) or an independent computation of
the same quantity, never with a copy of the reference solution.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable

import numpy as np
import torch

from mammo_utils.course import _NotYet, check


@check("2.1 NT-Xent", hint="NT-Xent is a classification among the 2N views of the batch: each view must pick its "
       "partner (the other view of its image) among every other view, by cosine similarity divided by the "
       "temperature; a view is never its own candidate.",
       recipe="Normalise z0 and z1 (F.normalize), stack them (2N rows), divide all pairwise dot products by the "
       "temperature, set each row's similarity with itself to -inf, and take F.cross_entropy whose target for "
       "row i is its partner (i + N for the first N rows, i - N for the others).")
def check_nt_xent(fn: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor], trials: int = 5) -> str:
    """Compare ``fn(z0, z1, temperature)`` with lightly's ``NTXentLoss`` on random batches of random sizes."""
    from lightly.loss import NTXentLoss

    gen = torch.Generator().manual_seed(0)
    for trial in range(trials):
        n, d = int(torch.randint(2, 33, (1,), generator=gen)), int(torch.randint(2, 129, (1,), generator=gen))
        temperature = float(torch.empty(1).uniform_(0.05, 1.0, generator=gen))
        z0, z1 = torch.randn(n, d, generator=gen), torch.randn(n, d, generator=gen)
        expected = NTXentLoss(temperature=temperature)(z0, z1)
        got = fn(z0, z1, temperature)
        if got is None:
            raise NotImplementedError
        assert torch.allclose(torch.as_tensor(got, dtype=expected.dtype), expected, rtol=1e-4, atol=1e-5), (
            f"on trial {trial} (N={n}, D={d}, tau={temperature:.3f}) you got {float(got):.5f}, lightly "
            f"{float(expected):.5f}")
    return f"matches lightly's NTXentLoss on {trials} random batches."


def mean_random_loss(n_images: int, temperature: float, dim: int = 128, draws: int = 200, seed: int = 0) -> float:
    """lightly's NT-Xent of random, unrelated (N, dim) Gaussian embeddings, averaged over ``draws`` batches."""
    from lightly.loss import NTXentLoss

    gen = torch.Generator().manual_seed(seed)
    loss = NTXentLoss(temperature=temperature)
    return float(np.mean([float(loss(torch.randn(n_images, dim, generator=gen), torch.randn(n_images, dim,
                                                                                             generator=gen)))
                          for _ in range(draws)]))


@check("2.2 Loss of random embeddings", hint="Unrelated embeddings in 128 dimensions are nearly orthogonal: every "
       "similarity is close to 0, so every candidate in a view's softmax gets the same probability.",
       recipe="Count the candidates of one view: all the 2N views of the batch but itself, the positive among "
       "them; the loss of a uniform guess among m candidates is log(m), whatever the temperature.")
def check_random_embedding_loss(fn: Callable[[int, float], float]) -> str:
    """Compare ``fn(n_images, temperature)`` with lightly's NT-Xent of random 128-d embeddings, averaged."""
    tolerance = 0.05
    for n in (4, 16, 64):  # (at N = 2, log N and log(2N - 2) coincide)
        got = fn(n, 0.5)
        if got is None:
            raise NotImplementedError
        got = float(got)
        wrong = {math.log(n): "log N counts only N candidates, but each view is compared with every other view "
                 "of the 2N in the batch",
                 math.log(2 * n): "log 2N counts the view itself, whose similarity with itself NT-Xent leaves out",
                 math.log(2 * n - 2): "log(2N - 2) counts the negatives only: the positive is in the softmax too"}
        for value, why in wrong.items():
            assert not math.isclose(got, value, abs_tol=1e-4), f"for N={n} you gave {got:.4f}: {why}"
    for n in (2, 4, 16, 64):
        for temperature in (0.5, 1.0):
            got, expected = float(fn(n, temperature)), mean_random_loss(n, temperature, draws=max(10, 400 // n))
            assert abs(got - expected) < tolerance, (
                f"for N={n} images at tau={temperature} you predict {got:.3f}; lightly's NT-Xent of random "
                f"128-d embeddings averages {expected:.3f}")
    return (f"within {tolerance} of lightly's NT-Xent of random embeddings (N = 2 to 64): "
            f"{mean_random_loss(16, 0.5, draws=25):.3f} for a batch of 16 images, chance level for every pretraining curve.")


class _TinyContrastive(torch.nn.Module):
    """A SimCLR in miniature for checks: a small conv net, lightly's projection head and loss."""

    def __init__(self) -> None:
        from lightly.loss import NTXentLoss
        from lightly.models.modules import SimCLRProjectionHead

        super().__init__()
        self.backbone = torch.nn.Sequential(
            torch.nn.Conv2d(1, 8, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(2),
            torch.nn.Flatten())
        self.projection_head = SimCLRProjectionHead(32, 32, 16)
        self.criterion = NTXentLoss(temperature=0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(x))

    def contrastive_loss(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        return self.criterion(self(x0), self(x1))

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        (x0, x1), _ = batch
        return self.contrastive_loss(x0, x1)


def _reference_gradients(module: torch.nn.Module, x0: torch.Tensor, x1: torch.Tensor) -> tuple[float, list]:
    """The loss and the gradients of one fresh backward pass, on a copy of ``module`` (left untouched)."""
    twin = copy.deepcopy(module)
    twin.zero_grad(set_to_none=True)
    loss = twin.contrastive_loss(x0, x1)
    loss.backward()
    return float(loss.detach()), [p.grad.clone() for p in twin.parameters()]


@check("2.3 One training step", hint="A step has four parts: clear what the last step left, compute the loss of "
       "this batch, turn it into gradients, move the weights along them. Gradients ADD UP in .grad until cleared.",
       recipe="In this order: optimizer.zero_grad(), loss = module.contrastive_loss(x0, x1), loss.backward(), "
       "optimizer.step(); return loss.item().")
def check_training_step(fn: Callable, steps: int = 6) -> str:
    """Run ``fn(module, optimizer, x0, x1)`` a few times on a tiny SimCLR and a fixed batch of 8 view pairs:
    the loss it returns must be the loss before the step, the gradients those of this step alone, the
    parameters must move and the loss fall."""
    torch.manual_seed(0)
    module = _TinyContrastive()
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    x0 = torch.rand(8, 1, 16, 16)
    x1 = (x0 + 0.05 * torch.randn_like(x0)).clamp(0, 1)
    losses = []
    for step in range(steps):
        before = [p.detach().clone() for p in module.parameters()]
        expected_loss, expected_grads = _reference_gradients(module, x0, x1)
        got = fn(module, optimizer, x0, x1)
        assert got is not None, "your function returned None: return the loss (a float, e.g. loss.item())"
        got = float(got.detach() if isinstance(got, torch.Tensor) else got)
        assert math.isclose(got, expected_loss, rel_tol=1e-4, abs_tol=1e-5), (
            f"step {step}: you returned {got:.5f}, but the loss of the batch before the step is "
            f"{expected_loss:.5f}: return the loss you computed and back-propagated")
        moved = any(not torch.equal(a, p.detach()) for a, p in zip(before, module.parameters(), strict=True))
        assert moved, f"after step {step} no parameter moved: call optimizer.step() after loss.backward()"
        grads = [p.grad for p in module.parameters()]
        if all(g is not None and bool(g.any()) for g in grads):  # (zeroing at the end of a step is fine too)
            same = all(torch.allclose(g, e, rtol=1e-4, atol=1e-6) for g, e in zip(grads, expected_grads,
                                                                                   strict=True))
            assert same, (f"at step {step} the gradients are not this step's: they add up across steps. Call "
                          "optimizer.zero_grad() before loss.backward()")
        losses.append(got)
    assert losses[-1] < losses[0], f"the loss did not fall over {steps} steps: {', '.join(f'{v:.3f}' for v in losses)}"
    return f"the loss of a fixed batch fell over {steps} steps: {losses[0]:.3f} -> {losses[-1]:.3f}."


def _knn_problem(seed: int, n_bank: int = 80, n_query: int = 40, dim: int = 16) -> tuple[np.ndarray, ...]:
    """Two overlapping classes, imbalanced (1 in 4 positive), with row norms that differ wildly (so cosine and
    Euclidean neighbours disagree)."""
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=dim)

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        labels = (rng.random(n) < 0.25).astype(int)
        labels[:2] = [0, 1]
        feats = rng.normal(size=(n, dim)) + 0.8 * labels[:, None] * direction
        return feats * rng.uniform(0.2, 5.0, size=(n, 1)), labels

    return (*sample(n_bank), *sample(n_query))


@check("2.4 kNN monitor", hint="Neighbours by direction, not length (cosine similarity); closer neighbours vote "
       "more; and the score must not reward calling everything the common class.",
       recipe="Normalise the features to unit length (cosine similarity is then a dot product), take each "
       "query's k most similar bank images, weight each one's vote by 1 / (1 - similarity), predict the class "
       "with the larger total, and average the recall of each class (balanced accuracy).")
def check_knn_balanced_accuracy(fn: Callable, problems: int = 4) -> str:
    """Compare ``fn(bank_features, bank_labels, query_features, query_labels, k)`` with the package's
    :func:`~mammo_utils.pretrain.monitor.knn_balanced_accuracy` (scikit-learn's kNN) on imbalanced problems."""
    from sklearn.metrics import accuracy_score, balanced_accuracy_score
    from sklearn.neighbors import KNeighborsClassifier

    from mammo_utils.pretrain.monitor import knn_balanced_accuracy

    for seed in range(problems):
        bank, bank_y, query, query_y = _knn_problem(seed)
        for k in (1, 5, 10):
            expected = knn_balanced_accuracy(bank, bank_y, query, query_y, k)
            got = fn(bank, bank_y, query, query_y, k)
            if got is None:
                raise NotImplementedError
            got = float(got)
            if math.isclose(got, expected, abs_tol=1e-9):
                continue
            where = f"on problem {seed} with k={k} you got {got:.4f}, the monitor {expected:.4f}"

            def variant(metric: str, weights: str, score=None, k=k, bank=bank, bank_y=bank_y, query=query,
                        query_y=query_y):
                predicted = KNeighborsClassifier(n_neighbors=k, metric=metric, weights=weights).fit(
                    bank, bank_y).predict(query)
                return (score or balanced_accuracy_score)(query_y, predicted)

            mistakes = [(variant("cosine", "distance", accuracy_score), "that is plain accuracy: with 1 positive "
                         "in 4, always saying 'negative' scores 0.75. Average the recall of each class instead"),
                        (variant("euclidean", "distance"), "those are Euclidean neighbours: normalise the features "
                         "to unit length first, so that only their direction counts"),
                        (variant("cosine", "uniform"), "every neighbour votes equally in your code; weight each "
                         "vote by 1 / (1 - cosine similarity)")]
            for value, why in mistakes:
                assert not math.isclose(got, value, abs_tol=1e-9), f"{where}: {why}"
            raise AssertionError(where)
    return f"matches the package's kNN monitor on {problems} imbalanced problems at k = 1, 5 and 10."


@check("2.5 Ablation", hint="An ablation changes ONE thing and keeps everything else, so that any difference is "
       "that thing's doing; the variant trains in its own run folder, beside the first run.",
       recipe="Keep the variant as the exercise cell builds it: load_config(..., variant='moco', "
       "overrides=['pretrain.method=moco', 'finetune.cv=false']), no other override; set RUN_ABLATION = True and "
       "run that cell and the next one again.")
def check_ablation(run_ablation: bool, cfg, variant) -> str:
    """Compare the first run's ``history.csv`` with the named variant's, once the variant has run.

    The variant's configuration must differ from the first run's in ``pretrain.method`` and nothing else
    (``finetune.inits``, which follows the method, and ``finetune.cv``, which only decides whether stage 02 also
    pretrains one backbone per fold, aside), and the runs on disk must be the runs of those two configurations.

    Args:
        run_ablation: the exercise's setting (``RUN_ABLATION``).
        cfg: the first run's configuration.
        variant: the variant's configuration (``load_config(..., variant=..., overrides=[...])``).
    """
    import pandas as pd

    from mammo_utils.course import require_one_change
    from mammo_utils.pretrain.stage import SECTIONS
    from mammo_utils.runs.paths import run_dir, stage_dir
    from mammo_utils.runs.stage import is_done, stage_key

    main_out, variant_out = stage_dir(cfg, "pretrain", create=False), stage_dir(variant, "pretrain", create=False)
    if not run_ablation:  # a variant left on disk by an earlier session does not count as this learner's answer
        raise _NotYet(f"RUN_ABLATION is False: set it to True to train the variant into {run_dir(variant)}.")
    assert variant.variant, "the variant's configuration has no variant name: it would overwrite the first run"
    # finetune.inits follows the method (load_config names the pretrained init after it); finetune.cv only
    # decides whether stage 02 also pretrains one backbone per fold.
    change = require_one_change(cfg, variant, "pretrain.method", ("finetune.inits", "finetune.cv"),
                                "overrides=['pretrain.method=moco']")
    if not (variant_out / "history.csv").exists():
        raise AssertionError(f"RUN_ABLATION is True but {variant_out} holds no history.csv: run the cell that "
                             "trains the variant")
    assert (main_out / "history.csv").exists(), f"no history.csv in {main_out}: run run_pretrain(cfg) first"
    for name, out, run_cfg in (("the first run", main_out, cfg), ("the variant", variant_out, variant)):
        assert is_done(out, stage_key(run_cfg, "pretrain", SECTIONS), ["history.csv"]), (
            f"{out} holds a run of other settings than {name}'s now: run it again")
    first, second = (pd.read_csv(out / "history.csv") for out in (main_out, variant_out))
    for name, history in (("first run", first), ("variant", second)):
        assert len(history) and history["loss"].iloc[1:].notna().all(), f"the {name}'s history has no loss"
    method = json.loads((variant_out / "stage.json").read_text())["config"]["pretrain"]["method"]

    def last(h: pd.DataFrame, column: str) -> str:
        values = h[column].dropna() if column in h else []
        return f"{values.iloc[-1]:.3f}" if len(values) else "n/a"

    return (f"{change}. Last epoch: kNN {last(first, 'knn')} ({cfg.pretrain.method}) vs "
            f"{last(second, 'knn')} ({method}), chance 0.5; losses {last(first, 'loss')} vs "
            f"{last(second, 'loss')}, each against its own chance level.")
