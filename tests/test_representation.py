"""Alignment, uniformity and pair similarities, each checked against an independent computation."""

import itertools
import math

import numpy as np
import pytest
import torch
from lightly.loss import NTXentLoss
from sklearn.metrics.pairwise import cosine_similarity

from mammo_utils.pretrain.analysis import (
    alignment,
    contrastive_probabilities,
    pair_similarities,
    representation_table,
    two_views,
    uniformity,
    view_features,
)
from mammo_utils.sections import ViewsConfig


@pytest.fixture
def pairs():
    gen = torch.Generator().manual_seed(0)
    z0 = torch.randn(7, 5, generator=gen)
    return z0, z0 + 0.3 * torch.randn(7, 5, generator=gen)


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def test_alignment_is_the_mean_squared_distance_of_each_image_s_two_views_on_the_sphere(pairs):
    z0, z1 = pairs
    a, b = _unit(z0.numpy().astype(np.float64)), _unit(z1.numpy().astype(np.float64))
    expected = np.mean([np.sum((a[i] - b[i]) ** 2) for i in range(len(a))])
    assert float(alignment(z0, z1)) == pytest.approx(expected, rel=1e-5)
    # alpha = 2 on unit vectors is 2 - 2 cos: the same number read as a cosine similarity
    assert float(alignment(z0, z1)) == pytest.approx(np.mean(2 - 2 * np.sum(a * b, axis=1)), rel=1e-5)
    assert float(alignment(z0, 3 * z0)) == pytest.approx(0.0, abs=1e-6)  # scale does not matter


def test_uniformity_is_the_log_mean_gaussian_potential_over_every_two_different_images(pairs):
    z = pairs[0]
    u = _unit(z.numpy().astype(np.float64))
    potentials = [math.exp(-2 * np.sum((u[i] - u[j]) ** 2)) for i, j in itertools.combinations(range(len(u)), 2)]
    assert float(uniformity(z)) == pytest.approx(math.log(np.mean(potentials)), rel=1e-5)


def test_a_collapsed_representation_is_aligned_but_not_uniform_and_spread_points_approach_minus_four():
    same = torch.ones(10, 8)
    assert float(alignment(same, same)) == pytest.approx(0.0, abs=1e-6)
    assert float(uniformity(same)) == pytest.approx(0.0, abs=1e-6)
    spread = torch.randn(500, 512, generator=torch.Generator().manual_seed(1))
    assert float(uniformity(spread)) == pytest.approx(-4.0, abs=0.05)


def test_pair_similarities_are_the_diagonal_and_the_rest_of_the_cross_view_cosine_matrix(pairs):
    z0, z1 = pairs
    sim = cosine_similarity(z0.numpy(), z1.numpy())
    positive, negative = pair_similarities(z0, z1)
    np.testing.assert_allclose(positive.numpy(), np.diag(sim), rtol=1e-5)
    np.testing.assert_allclose(np.sort(negative.numpy()), np.sort(sim[~np.eye(7, dtype=bool)]), rtol=1e-5)
    assert positive.mean() > negative.mean()  # the fixture's views are noisy copies of each other


@pytest.mark.parametrize("temperature", [0.1, 0.5, 2.0])
def test_nt_xent_is_the_mean_negative_log_probability_of_each_view_s_partner(pairs, temperature):
    z0, z1 = pairs
    p = contrastive_probabilities(z0, z1, temperature)
    n = len(z0)
    assert p.shape == (2 * n, 2 * n)
    torch.testing.assert_close(p.sum(dim=1), torch.ones(2 * n))
    assert torch.all(p.diagonal() == 0)
    partner = (torch.arange(2 * n) + n) % (2 * n)
    loss = -p[torch.arange(2 * n), partner].log().mean()
    torch.testing.assert_close(loss, NTXentLoss(temperature=temperature)(z0, z1), rtol=1e-5, atol=1e-6)


def test_two_views_are_the_same_for_a_seed_and_leave_the_global_random_state_alone():
    regions = torch.rand(3, 1, 30, 30)
    before = torch.random.get_rng_state()
    a0, a1 = two_views(regions, 20, ViewsConfig(), seed=4)
    b0, _ = two_views(regions, 20, ViewsConfig(), seed=4)
    c0, _ = two_views(regions, 20, ViewsConfig(), seed=5)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert a0.shape == a1.shape == (3, 1, 20, 20)
    assert torch.equal(a0, b0) and not torch.equal(a0, c0) and not torch.equal(a0, a1)


def test_the_table_tells_a_collapsed_backbone_from_one_that_keeps_images_apart():
    torch.manual_seed(0)
    x0 = torch.rand(6, 1, 8, 8)
    x1 = (x0 + 0.01 * torch.randn_like(x0)).clamp(0, 1)
    collapsed = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4, bias=True))
    torch.nn.init.zeros_(collapsed[1].weight)
    torch.nn.init.ones_(collapsed[1].bias)
    identity = torch.nn.Flatten()
    features = {name: view_features(net, x0, x1) for name, net in (("collapsed", collapsed), ("identity", identity))}
    assert features["identity"][0].shape == (6, 64)
    table = representation_table(features)
    assert list(table.index) == ["collapsed", "identity"]
    assert table.loc["collapsed", "uniformity"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["collapsed", "gap"] == pytest.approx(0.0, abs=1e-6)
    assert table.loc["identity", "uniformity"] < -0.1
    assert table.loc["identity", "gap"] > 0.1  # nearly identical views, different images
