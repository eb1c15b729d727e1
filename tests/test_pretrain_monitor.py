"""Proof that pretraining learns: the trivial loss level, the pretext accuracy, the kNN monitor, and a run that
learns on synthetic crops."""

import math

import numpy as np
import pandas as pd
import pytest
import torch
from lightly.loss import NTXentLoss

from mammo_utils.pretrain.monitor import KnnMonitor, constant_output_loss, knn_balanced_accuracy, pretext_top1


@pytest.mark.parametrize("n", [2, 16, 128])
def test_the_constant_output_level_is_lightlys_loss_for_one_vector_everywhere(n):
    z = torch.ones(n, 8)
    assert math.isclose(float(NTXentLoss(temperature=0.2)(z, z)), constant_output_loss(2 * n - 1), rel_tol=1e-5)


def test_pretext_accuracy_is_one_for_identical_views_and_near_chance_for_random_ones():
    torch.manual_seed(0)
    z = torch.randn(64, 32)
    assert pretext_top1(z, z + 1e-3 * torch.randn_like(z)) == 1.0
    chance = np.mean([pretext_top1(torch.randn(64, 32), torch.randn(64, 32)) for _ in range(20)])
    assert chance < 5 / 127  # chance is 1 / (2N - 1)


def test_the_knn_vote_separates_separable_features_and_says_chance_otherwise():
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], 50)
    separated = np.c_[y, 1 - y] + 0.1 * rng.standard_normal((100, 2))  # two directions: cosine tells them apart
    assert knn_balanced_accuracy(separated[::2], y[::2], separated[1::2], y[1::2]) == 1.0
    noise = rng.standard_normal((100, 2))
    assert abs(knn_balanced_accuracy(noise[::2], y[::2], noise[1::2], y[1::2]) - 0.5) < 0.2
    assert math.isnan(knn_balanced_accuracy(noise, y, noise[:10], np.zeros(10)))


def test_the_monitor_scores_a_backbone_in_eval_mode_and_leaves_it_as_it_found_it():
    class Brightness(torch.nn.Module):  # a "backbone" whose features are the crop's mean and a constant
        def forward(self, x):
            return torch.stack([x.mean(dim=(1, 2, 3)), torch.ones(len(x))], dim=1)

    bright = torch.cat([torch.full((20, 1, 8, 8), 0.9), torch.full((20, 1, 8, 8), 0.1)])
    labels = np.repeat([1, 0], 20)
    backbone = torch.nn.Sequential(torch.nn.BatchNorm2d(1), Brightness()).train()
    monitor = KnnMonitor(bright, labels, bright, labels, k=3)
    assert monitor.usable and monitor.score(backbone) == 1.0 and backbone.training
    assert not KnnMonitor(bright, labels, bright, np.zeros(40), k=3).usable


def test_a_short_pretraining_on_synthetic_crops_learns(tiny_cfg):
    """Loss below ln(2N - 1), pretext accuracy far above its chance: what every published run must show."""
    from dataclasses import replace

    from mammo_utils.prepare.stage import run_prepare
    from mammo_utils.pretrain.stage import run_pretrain

    # A small task that learns fast: films drawn at 128 px, milder views (no blur or noise, views of half the
    # region or more); the machinery (regions, views, loss, optimiser, monitor) is the stage's own.
    cfg = replace(tiny_cfg, synthetic=replace(tiny_cfg.synthetic, size_px=128),
                  pretrain=replace(tiny_cfg.pretrain, steps=100, epochs=4, batch_size=32, warmup_steps=5, lr=2e-3),
                  views=replace(tiny_cfg.views, blur_prob=0.0, noise_std=0.0, scale=(0.5, 1.0)))
    run_prepare(cfg, workers=1)
    history = pd.read_csv(run_pretrain(cfg) / "history.csv")
    last = history.iloc[-1]
    assert last.loss < last.loss_constant_output - 0.3, history
    assert last.pretext_top1 > 5 * last.pretext_chance, history
    assert history.epoch.tolist() == [0, 1, 2, 3, 4] and history.knn.notna().iloc[0]
