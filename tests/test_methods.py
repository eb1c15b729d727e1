"""Self-supervised methods: the registry, MoCo v2's queue and momentum encoder, and the inits that follow them."""

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


def test_the_queue_never_holds_more_images_than_the_training_set():
    assert queue_size(4096, 240, 32) == 192  # whole batches, below the 240 training images
    assert queue_size(64, 240, 32) == 64
    assert queue_size(4096, 20, 16) == 16  # at least one batch


def test_moco_trains_its_query_encoder_and_moves_the_momentum_encoder_slowly(tiny_cfg):
    cfg = replace(tiny_cfg, pretrain=replace(tiny_cfg.pretrain, method="moco", momentum=0.9, memory_bank_size=4096),
                  finetune=replace(tiny_cfg.finetune, inits=("moco",), protocols=(), tasks=("abnormal",)))
    index = pd.read_csv(run_prepare(cfg, workers=1) / "preprocessed.csv", keep_default_na=False)
    module = build_module(cfg, int((index.split == "train").sum()))
    assert isinstance(module, MoCoModule) and module.hparams.memory_bank_size < len(index)
    assert all(not p.requires_grad for p in module.backbone_momentum.parameters())
    start_q = [p.detach().clone() for p in module.backbone.parameters()]
    start_k = [p.detach().clone() for p in module.backbone_momentum.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(start_q, start_k, strict=True))  # the key encoder starts as a copy
    with torch.no_grad():
        module.backbone.conv1.weight.add_(1.0)  # as if the optimiser had moved the query encoder
    torch.manual_seed(0)
    loss = module.contrastive_loss(torch.rand(4, 1, 32, 32), torch.rand(4, 1, 32, 32))
    assert torch.isfinite(loss)
    # theta_k <- m theta_k + (1 - m) theta_q, with m = 0.9 at the first step: the key encoder moved a tenth of the way
    assert torch.allclose(module.backbone_momentum.conv1.weight, start_k[0] + 0.1, atol=1e-6)
    out = run_pretrain(cfg)
    backbone = load_backbone(out / "backbone.pt")
    assert not all(torch.equal(a, b) for a, b in zip(start_q, backbone.parameters(), strict=True))
    history = pd.read_csv(out / "history.csv")
    assert history["train_loss_epoch"].notna().all()
    pred = pd.read_csv(run_finetune(cfg) / "predictions.csv")
    assert set(pred.init) == {"moco"}  # stage 03 fine-tunes from the MoCo backbone under its own name
