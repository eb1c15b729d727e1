"""Pretraining that people can rely on: a killed run resumed gives the same weights as one never killed.

Two-process (DDP) pretraining is tested in ``test_ddp.py``."""

from dataclasses import replace

import pandas as pd
import pytest
import pytorch_lightning as pl
import torch

from mammo_utils.models import load_backbone
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.stage import run_pretrain


class _KillMidEpoch(pl.Callback):
    """Stands in for a killed process: fails in the middle of the second epoch."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.current_epoch == 1 and batch_idx == 1:
            raise RuntimeError("simulated kill")


def _cfg(tiny_cfg, runs):
    cfg = replace(tiny_cfg, runs_dir=str(runs))
    return replace(cfg, pretrain=replace(cfg.pretrain, steps=6, epochs=2, batch_size=4, hidden_dim=64,
                                         output_dim=16))


def test_killed_and_resumed_run_ends_with_the_same_weights(tiny_cfg, tmp_path):
    whole, broken = _cfg(tiny_cfg, tmp_path / "a"), _cfg(tiny_cfg, tmp_path / "b")
    for cfg in (whole, broken):
        run_prepare(cfg, workers=1)
    reference = load_backbone(run_pretrain(whole, deterministic=True) / "backbone.pt")

    with pytest.raises(RuntimeError, match="simulated kill"):
        run_pretrain(broken, deterministic=True, callbacks=[_KillMidEpoch()])
    out = run_pretrain(broken, resume=True, deterministic=True)
    resumed = load_backbone(out / "backbone.pt")
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name
    history = pd.read_csv(out / "history.csv")
    assert list(history.epoch) == [0, 1, 2] and history.loss.iloc[1:].notna().all()  # epoch 0: the untrained net

