"""Self-supervised methods: the registry, MoCo v2's queue and momentum encoder, and the inits that follow them."""

import math
from dataclasses import replace

import pandas as pd
import pytest
import torch

from mammo_utils.config import load_config
from mammo_utils.errors import ConfigError
from mammo_utils.finetune.stage import run_finetune
from mammo_utils.models import load_backbone
from mammo_utils.prepare.stage import run_prepare
from mammo_utils.pretrain.methods import INITS, METHODS, get_method
from mammo_utils.pretrain.methods.moco import MoCoModule, queue_size
from mammo_utils.pretrain.stage import build_module, run_pretrain


def test_every_method_is_a_registry_line_and_an_init():
    assert list(METHODS) == ["simclr", "moco"] and INITS[: len(METHODS)] == tuple(METHODS)
    for name in METHODS:
        assert get_method(name).__name__.lower().startswith(name)
    with pytest.raises(ConfigError, match="pretrain.method"):
        get_method("byol")


def test_inits_follow_the_method_unless_set_explicitly(monkeypatch):
    monkeypatch.delenv("MAMMO_OVERRIDES", raising=False)
    assert load_config("demo", "mias", overrides=["pretrain.method=moco"]).finetune.inits[0] == "moco"
    with pytest.raises(ConfigError, match="finetune.inits=moco,random"):
        load_config("demo", "mias", overrides=["pretrain.method=moco", "finetune.inits=simclr,random"])


def test_the_queue_holds_whole_batches():
    assert queue_size(4096, 128) == 4096
    assert queue_size(200, 64) == 192
    assert queue_size(10, 16) == 16  # at least one batch


def test_moco_trains_its_query_encoder_and_moves_the_momentum_encoder_slowly(tiny_cfg):
    cfg = replace(tiny_cfg, pretrain=replace(tiny_cfg.pretrain, method="moco", momentum=0.9, memory_bank_size=40),
                  finetune=replace(tiny_cfg.finetune, inits=("moco",), classifiers=(), tasks=("abnormal",)))
    run_prepare(cfg, workers=1)
    module = build_module(cfg)
    assert isinstance(module, MoCoModule) and module.hparams.memory_bank_size == 40
    assert module.constant_output_loss() == pytest.approx(math.log(41))  # the key among 40 queued negatives
    assert all(not p.requires_grad for p in module.backbone_momentum.parameters())
    start_q = [p.detach().clone() for p in module.backbone.parameters()]
    start_k = [p.detach().clone() for p in module.backbone_momentum.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(start_q, start_k, strict=True))  # the key encoder starts as a copy
    with torch.no_grad():
        module.backbone.conv1.weight.add_(1.0)  # as if the optimiser had moved the query encoder
    torch.manual_seed(0)
    loss, top1 = module.contrastive_step(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))
    assert torch.isfinite(loss) and 0 <= top1 <= 1
    # theta_k <- m theta_k + (1 - m) theta_q, with m = 0.9 at the first step: the key encoder moved a tenth of the way
    assert torch.allclose(module.backbone_momentum.conv1.weight, start_k[0] + 0.1, atol=1e-6)
    out = run_pretrain(cfg)
    backbone = load_backbone(out / "backbone.pt")
    assert not all(torch.equal(a, b) for a, b in zip(start_q, backbone.parameters(), strict=True))
    history = pd.read_csv(out / "history.csv")
    assert history.loss.iloc[1:].notna().all() and history.loss_constant_output.iloc[-1] == pytest.approx(math.log(41))
    pred = pd.read_csv(run_finetune(cfg) / "predictions.csv")
    assert set(pred.init) == {"moco"}  # stage 03 fine-tunes from the MoCo backbone under its own name
