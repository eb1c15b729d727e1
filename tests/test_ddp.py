"""Distributed pretraining does what it is for: two processes on one batch compute what one process computes on
the whole batch.

SimCLR's negatives are the rest of the batch, so split over two GPUs each half must see the other half's
embeddings (lightly's ``NTXentLoss(gather_distributed=True)``); MoCo's queue must take the keys of every GPU, and
its momentum encoder must see batches shuffled across GPUs (MoCo's shuffled batch norm, lightly's
``batch_shuffle(distributed=True)``). Here two CPU processes talk through gloo, first with the package's own
losses on tiny tensors (exact comparisons), then as a Lightning ``strategy="ddp"`` run of stage 02 for each method.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mammo_utils.config import load_config
from mammo_utils.models import load_backbone, make_backbone
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.methods.moco import MoCoModule
from mammo_utils.pretrain.methods.simclr import SimCLRModule

WORLD = 2
N_PER_RANK = 4  # images per process; the whole batch is WORLD * N_PER_RANK
DIM = 16


def _whole_batch() -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear]:
    """Two views' features of the whole batch, and a projection head, identical in every process (seeded)."""
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(WORLD * N_PER_RANK, DIM, generator=g)
    x1 = x0 + 0.3 * torch.randn(x0.shape, generator=g)
    torch.manual_seed(1)
    return x0, x1, torch.nn.Linear(DIM, DIM)


class _Pair(torch.nn.Module):
    """Projects both views in one forward pass, as a LightningModule's training step does under DDP."""

    def __init__(self, head: torch.nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(x0), self.head(x1)


def _nt_xent_step(criterion: torch.nn.Module, rank: int) -> dict:
    """One DDP step on this rank's half of the batch: its loss, and the gradient DDP leaves (averaged over ranks)."""
    x0, x1, head = _whole_batch()
    model = torch.nn.parallel.DistributedDataParallel(_Pair(head))
    half = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    loss = criterion(*model(x0[half], x1[half]))
    loss.backward()
    return {"loss": loss.item(), "grad": head.weight.grad.clone()}


def _worker(rank: int, init_file: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    torch.manual_seed(0)
    simclr = SimCLRModule(hidden_dim=32, output_dim=DIM, temperature=0.2)
    result = {"gathered": _nt_xent_step(simclr.criterion, rank)}
    simclr.criterion.gather_distributed = False  # the same loss, each process on its own half
    result["alone"] = _nt_xent_step(simclr.criterion, rank)

    # MoCo: the queue after one step, and the momentum encoder's keys of this rank's images.
    torch.manual_seed(0)  # the same weights in both processes
    moco = MoCoModule(hidden_dim=32, output_dim=DIM, memory_bank_size=4 * WORLD * N_PER_RANK)
    x0, x1, _ = _whole_batch()
    half = slice(rank * N_PER_RANK, (rank + 1) * N_PER_RANK)
    moco.criterion(x0[half].clone().requires_grad_(), x1[half])  # the keys x1 are queued
    result["queue"] = moco.criterion.memory_bank.bank[: WORLD * N_PER_RANK].clone()
    moco.trainer = SimpleNamespace(world_size=WORLD)  # all forward_momentum asks of the Trainer
    g = torch.Generator().manual_seed(2)
    images, other = torch.rand(WORLD, N_PER_RANK, 1, 32, 32, generator=g), torch.rand(N_PER_RANK, 1, 32, 32, generator=g)
    result["keys"] = []
    for second in (False, True):  # rank 0 sends the same images twice; rank 1 other images the second time
        torch.manual_seed(3)  # the same cross-process shuffle both times
        result["keys"].append(moco.forward_momentum(other if second and rank == 1 else images[rank]))
    torch.save(result, Path(out) / f"rank{rank}.pt")
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> Iterator[list[dict]]:
    """What each of two gloo processes computed (see :func:`_worker`)."""
    out = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(str(out / "rendezvous"), str(out)), nprocs=WORLD, join=True)
    yield [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]
    shutil.rmtree(out, ignore_errors=True)  # pytest keeps a module's folders to the session's end


def _single_process(criterion: torch.nn.Module) -> tuple[float, torch.Tensor]:
    x0, x1, head = _whole_batch()
    loss = criterion(head(x0), head(x1))
    loss.backward()
    return loss.item(), head.weight.grad


def test_nt_xent_over_two_processes_equals_the_loss_and_gradient_of_the_whole_batch(two_ranks):
    torch.manual_seed(0)
    whole_loss, whole_grad = _single_process(SimCLRModule(hidden_dim=32, output_dim=DIM, temperature=0.2).criterion)
    gathered = [r["gathered"] for r in two_ranks]
    # Lightning logs the mean over processes (sync_dist) and DDP averages the gradients: both are the whole batch's.
    assert sum(g["loss"] for g in gathered) / WORLD == pytest.approx(whole_loss, rel=1e-5)
    torch.testing.assert_close(gathered[0]["grad"], whole_grad, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(gathered[1]["grad"], whole_grad, rtol=1e-4, atol=1e-6)
    # Without gathering, each half is its own smaller batch (fewer negatives): another loss, another gradient.
    alone = [r["alone"] for r in two_ranks]
    assert abs(sum(a["loss"] for a in alone) / WORLD - whole_loss) > 0.05
    assert not torch.allclose(alone[0]["grad"], whole_grad, rtol=1e-2, atol=1e-4)


def test_moco_queues_the_keys_of_both_processes(two_ranks):
    x0, x1, _ = _whole_batch()
    expected = torch.nn.functional.normalize(x1, dim=1)  # every key of the whole batch, in rank order
    for r in two_ranks:
        torch.testing.assert_close(r["queue"], expected)


def test_moco_shuffles_the_momentum_encoders_batch_across_processes(two_ranks):
    """Batch norm in the momentum encoder sees a batch drawn from both processes (MoCo, Sec. 3.3), so the keys
    of rank 0's own images change when rank 1's images do; without the shuffle they could not."""
    before, after = two_ranks[0]["keys"]
    assert before.shape == (N_PER_RANK, DIM) and torch.isfinite(before).all()
    assert not torch.allclose(before, after, atol=1e-4)


# Stage 02 as the README starts it on several GPUs (``torchrun ... pretrain --set strategy=ddp``): every process runs
# the whole command. Here Lightning's own launcher does the same, running this script once more for rank 1. Each
# process records the weights it ended with and, after every step, the MoCo queue as it stands.
SCRIPT = """
import json, os, sys, time
from pathlib import Path
import pytorch_lightning as pl
import torch
import mammo_utils.pretrain.stage as stage
from mammo_utils.config import load_config

args = json.loads(sys.argv[1])
out = Path(args["out"])

class Record(pl.Callback):
    def __init__(self):
        self.queues = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        bank = getattr(module.criterion, "memory_bank", None)
        if bank is not None and bank.size[0]:
            self.queues.append((int(bank.bank_ptr), bank.bank.clone()))

    def on_train_end(self, trainer, module):
        torch.save({"parameters": {k: v.detach().clone() for k, v in module.named_parameters()},
                    "queues": self.queues, "world_size": trainer.world_size}, out / f"rank{trainer.global_rank}.pt")

# Rank 0 writes the stage's files after training; a slower disk is imitated so that the result cannot depend on
# which process happens to be faster.
save_backbone = stage.save_backbone
stage.save_backbone = lambda *a, **k: (time.sleep(2), save_backbone(*a, **k))[1]
cfg = load_config("smoke", "synthetic", overrides=args["overrides"], data_dir=args["data_dir"],
                  runs_dir=args["runs_dir"], precision="32-true", accelerator="cpu", devices=2, strategy="ddp")
stage.run_pretrain(cfg, callbacks=[Record()])
(out / f"finished-rank{os.environ.get('LOCAL_RANK', '0')}").touch()
"""


@pytest.fixture(scope="module", params=["simclr", "moco"])
def ddp_run(request, tmp_path_factory) -> Iterator[SimpleNamespace]:
    """A two-process (gloo, CPU) stage 02 run of one method on a tiny synthetic set."""
    method = request.param
    base = tmp_path_factory.mktemp(f"ddp-{method}")
    overrides = ["synthetic.n_patients=12", "synthetic.size_px=96", "image_size_px=32", "pretrain.batch_size=4",
                 "pretrain.steps=2", "pretrain.epochs=1", "pretrain.hidden_dim=32", "pretrain.output_dim=16",
                 f"pretrain.method={method}", "pretrain.memory_bank_size=16"]
    with pytest.MonkeyPatch.context() as mp_env:
        for var in ("MAMMO_PROFILE", "MAMMO_DATASET", "MAMMO_OVERRIDES", "MAMMO_TASK", "MAMMO_PRECISION"):
            mp_env.delenv(var, raising=False)
        cfg = load_config("smoke", "synthetic", overrides=overrides, data_dir=str(base / "data"),
                          runs_dir=str(base / "runs"), precision="32-true")
        run_prepare(cfg, workers=1)
        script = base / "pretrain_ddp.py"
        script.write_text(SCRIPT)
        args = {"out": str(base), "overrides": overrides, "data_dir": cfg.data_dir, "runs_dir": cfg.runs_dir}
        env = {k: v for k, v in os.environ.items() if k != "MAMMO_OVERRIDES"} | {"MAMMO_PROGRESS": "0"}
        done = subprocess.run([sys.executable, str(script), json.dumps(args)], cwd=base, env=env,
                              capture_output=True, text=True, timeout=300)
    yield SimpleNamespace(method=method, base=base, cfg=cfg, done=done,
                          out=Path(cfg.runs_dir) / "smoke-synthetic" / "02_pretrain")
    shutil.rmtree(base, ignore_errors=True)  # two state dicts and a run per method


def test_ddp_pretraining_ends_with_the_same_weights_on_both_processes(ddp_run):
    assert (ddp_run.base / "rank0.pt").exists(), ddp_run.done.stderr[-3000:]
    ranks = [torch.load(ddp_run.base / f"rank{r}.pt") for r in range(WORLD)]
    assert [r["world_size"] for r in ranks] == [WORLD, WORLD]
    # DDP averages the gradients, so every weight (MoCo's momentum copies included) ends the same everywhere,
    # and ends away from where it started: the processes trained, together.
    for name, value in ranks[0]["parameters"].items():
        assert torch.isfinite(value).all() and torch.equal(value, ranks[1]["parameters"][name]), name
    saved_model = load_backbone(ddp_run.out / "backbone.pt")
    saved = saved_model.state_dict()
    trained = {k.removeprefix("backbone."): v for k, v in ranks[0]["parameters"].items() if k.startswith("backbone.")}
    # Every weight of the backbone came back from the processes, and the saved backbone holds exactly those.
    assert set(trained) == {k for k, _ in saved_model.named_parameters()}
    assert all(torch.equal(saved[k], v) for k, v in trained.items())
    torch.manual_seed(ddp_run.cfg.seed)
    assert not torch.equal(trained["conv1.weight"], make_backbone(ddp_run.cfg.backbone).state_dict()["conv1.weight"])
    history = pd.read_csv(ddp_run.out / "history.csv")
    assert torch.isfinite(torch.tensor(history.loss.to_numpy()[1:])).all() and history.step.iloc[-1] == 2
    if ddp_run.method == "moco":
        # Each step queues the keys of both processes (4 each): the queues agree after every step.
        queues = [r["queues"] for r in ranks]
        assert len(queues[0]) == len(queues[1]) == 2
        for (ptr0, q0), (ptr1, q1) in zip(*queues, strict=True):
            assert ptr0 == ptr1 and torch.equal(q0, q1)
        assert [p for p, _ in queues[0]] == [8, 0]  # 2 steps x 2 processes x 4 keys fill the queue of 16


def test_every_process_of_a_ddp_run_finishes_the_stage(ddp_run):
    """Each process of a ``torchrun``-style run executes the whole command, so the work after training that
    only rank 0 does (writing ``history.csv``, the figure, ``stage.json``) must not make the others fail."""
    for rank in range(WORLD):
        failure = "\n".join(ddp_run.done.stderr.splitlines()[-3:])
        assert (ddp_run.base / f"finished-rank{rank}").exists(), f"process {rank} did not finish: {failure}"
    assert ddp_run.done.returncode == 0
    assert json.loads((ddp_run.out / "stage.json").read_text())["key"]
    assert (ddp_run.out / "pretrain_curves.png").exists()
