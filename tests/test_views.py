"""The two views of a region: per-image random crops, flips and quarter turns, intensity, blur and noise, drawn
for a whole batch at once, reproducibly."""

import math

import numpy as np
import pytest
import torch

from mammo_utils.pretrain.views import crop_affine, gaussian_blur, views
from mammo_utils.sections import ViewsConfig

NONE = ViewsConfig(scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip_prob=0, vflip_prob=0, rot90_prob=0, brightness=0,
                   contrast=0, gamma=(1.0, 1.0), blur_prob=0, noise_std=0)


def test_views_have_the_right_size_and_range_and_differ_per_image_and_per_call():
    regions = torch.rand(8, 1, 48, 48)
    g = torch.Generator().manual_seed(0)
    v0, v1 = views(regions, 32, ViewsConfig(), g), views(regions, 32, ViewsConfig(), g)
    assert v0.shape == v1.shape == (8, 1, 32, 32)
    assert v0.min() >= 0 and v0.max() <= 1
    assert not torch.allclose(v0, v1)
    same = views(regions[:1].expand(8, -1, -1, -1).contiguous(), 32, ViewsConfig(), torch.Generator().manual_seed(1))
    assert not torch.allclose(same[0], same[1])  # the same region, different parameters per image


def test_the_same_generator_seed_gives_the_same_views():
    regions = torch.rand(4, 1, 48, 48)
    a = views(regions, 32, ViewsConfig(), torch.Generator().manual_seed(3))
    b = views(regions, 32, ViewsConfig(), torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_with_every_change_off_a_view_is_the_region_resized():
    ramp = torch.linspace(0, 1, 64).expand(64, 64)[None, None].repeat(2, 1, 1, 1)
    out = views(ramp, 64, NONE, torch.Generator().manual_seed(0))
    assert torch.allclose(out, ramp, atol=1e-5)


def test_crops_keep_the_asked_area_and_stay_inside_the_region():
    cfg = ViewsConfig(scale=(0.25, 0.5), ratio=(0.75, 1.33), hflip_prob=0.5, vflip_prob=0.5, rot90_prob=0.5)
    theta = crop_affine(2000, cfg, torch.Generator().manual_seed(0))
    area = theta[:, :, :2].det().abs()  # |w h|: the fraction of the region the view keeps
    assert area.min() >= 0.25 - 1e-6 and area.max() <= 0.5 + 1e-6
    half_extent = theta[:, :, :2].abs().sum(dim=2)  # the view's half-width along each axis of the region
    assert (theta[:, :, 2].abs() + half_extent <= 1 + 1e-5).all()


@pytest.mark.parametrize(("name", "prob"), [("hflip_prob", 1.0), ("vflip_prob", 1.0)])
def test_a_flip_of_probability_one_mirrors_every_view(name, prob):
    ramp = torch.linspace(0, 1, 32).expand(32, 32)[None, None].repeat(3, 1, 1, 1)
    ramp = ramp if name == "hflip_prob" else ramp.transpose(2, 3)
    out = views(ramp, 32, NONE.__class__(**{**NONE.__dict__, name: prob}), torch.Generator().manual_seed(0))
    assert torch.allclose(out, ramp.flip(3 if name == "hflip_prob" else 2), atol=1e-5)


def test_a_quarter_turn_swaps_the_axes():
    ramp = torch.linspace(0, 1, 32).expand(32, 32)[None, None]
    out = views(ramp, 32, NONE.__class__(**{**NONE.__dict__, "rot90_prob": 1.0}), torch.Generator().manual_seed(0))
    assert torch.allclose(out, ramp.transpose(2, 3), atol=1e-5)


def test_blur_spreads_a_point_by_its_sigma_and_only_where_asked():
    x = torch.zeros(2, 1, 15, 15)
    x[:, :, 7, 7] = 1
    out = gaussian_blur(x, torch.tensor([1.0, 1.0]), torch.tensor([True, False]))
    assert torch.equal(out[1], x[1])
    assert math.isclose(float(out[0].sum()), 1.0, rel_tol=1e-5)
    assert math.isclose(float(out[0, 0, 7, 8] / out[0, 0, 7, 7]), math.exp(-0.5), rel_tol=1e-4)


def test_the_simclr_diagram_is_drawn_from_the_examples_pixels(tmp_path):
    from PIL import Image

    from mammo_utils.pretrain.figures import simclr_diagram

    rng = np.random.default_rng(0)
    path = simclr_diagram(rng.random((96, 96)), rng.random((64, 64)), rng.random((64, 64)), (512, 128),
                          tmp_path / "simclr.png")
    with Image.open(path) as im:
        assert im.width > 2 * im.height  # one row: region, views, encoder, head, loss
        grey = np.asarray(im.convert("L"), dtype=np.float32)
    assert grey.std() > 20  # not blank: the images and the boxes are there
