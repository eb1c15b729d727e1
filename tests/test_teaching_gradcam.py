"""Notebook 05's checks: PASS for the reference solutions, NOT YET for the stubs, FAIL with the right hint for
the usual mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.course import gradcam as checks
from mammo_utils.course.solutions import gradcam as solutions


def _stub(*_args, **_kwargs):
    raise NotImplementedError


def _said(capsys) -> str:
    return capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.parametrize("name", ["grad_cam", "pointing_game", "energy_inside", "chance_level"])
def test_solutions_pass_and_stubs_are_not_yet(name, capsys):
    check = getattr(checks, f"check_{name}")
    assert check(getattr(solutions, f"my_{name}")) is True
    assert _said(capsys).startswith("PASS (")
    assert check(_stub) is False
    assert _said(capsys).startswith("NOT YET (")
    assert check(lambda *_a, **_k: None) is False  # a stub that forgot to raise
    assert _said(capsys).startswith("NOT YET (")


def _weights(gradients: torch.Tensor) -> torch.Tensor:
    return gradients.mean(dim=(1, 2))[:, None, None]


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda a, g: (_weights(g) * a).sum(0), "apply ReLU"),
    (lambda a, g: torch.relu((g.sum(dim=(1, 2))[:, None, None] * a).sum(0)), "h*w times too large"),
    (lambda a, g: torch.relu((_weights(g) * a).mean(0)), "do not average them"),
    (lambda a, g: torch.relu((g * a).sum(0)), "pixel by pixel"),
    (lambda a, g: (lambda m: m / m.max())(solutions.my_grad_cam(a, g)), "scaled to [0, 1]"),
    (lambda a, g: (torch.relu(_weights(g)) * a).sum(0), "ReLU went on the weights"),
    (lambda a, g: solutions.my_grad_cam(a, g)[None], "shape"),
])
def test_grad_cam_mistakes_fail_with_their_hint(wrong, says, capsys):
    assert checks.check_grad_cam(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL (5.1") and says in line


def _pointing_any_maximum(cam, mask):
    cam = np.asarray(cam)
    return cam.max() > cam.min() and bool((mask[cam == cam.max()] > 0).any())


def _pointing_transposed(cam, mask):
    if cam.max() <= cam.min():
        return False
    col, row = np.unravel_index(np.argmax(cam), cam.shape[::-1])
    return bool(mask[row, col] > 0)


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda cam, mask: bool(mask.reshape(-1)[np.argmax(cam)] > 0), "flat map points nowhere"),
    (_pointing_any_maximum, "FIRST maximum"),
    (_pointing_transposed, "order (row, column)"),
    (lambda cam, mask: mask.reshape(-1)[np.argmax(cam)] if cam.max() > cam.min() else False, "True or False"),
])
def test_pointing_game_mistakes_fail_with_their_hint(wrong, says, capsys):
    assert checks.check_pointing_game(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL (5.2") and says in line


def _energy_zero_for_empty(cam, mask):
    cam = np.clip(cam, 0, None)
    return 0.0 if cam.sum() == 0 else cam[mask > 0].sum() / cam.sum()


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda cam, mask: cam[mask > 0].sum() / cam.sum(), "clip the negative values"),
    (lambda cam, mask: np.clip(cam, 0, None)[mask > 0].mean(), "SHARE of the total"),
    (_energy_zero_for_empty, "float('nan')"),
])
def test_energy_inside_mistakes_fail_with_their_hint(wrong, says, capsys):
    assert checks.check_energy_inside(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL (5.3") and says in line


@pytest.mark.parametrize(("wrong", "says"), [
    (lambda lesion, breast=None: lesion.sum() / lesion.size, "divided by the whole grid"),
    (lambda lesion, breast=None: lesion.sum() / (lesion.size if breast is None else breast.sum()),
     "outside the breast"),
    (lambda lesion, breast: (lesion & breast).sum() / breast.sum(), "raised"),  # no default for the breast
])
def test_chance_level_mistakes_fail_with_their_hint(wrong, says, capsys):
    assert checks.check_chance_level(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL (5.4") and says in line
