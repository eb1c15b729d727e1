"""Notebook 05's checks: PASS for the reference solutions, NOT YET for the stubs, FAIL with the right hint for
the usual mistakes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammo_utils.course import gradcam as checks
from mammo_utils.course.solutions import gradcam as solutions
from mammo_utils.gradcam import scores as localization


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


def _cell_centre(cam, mask, r, c):
    return int((r + 0.5) * mask.shape[0] / cam.shape[0]), int((c + 0.5) * mask.shape[1] / cam.shape[1])


def _pointing_flat_is_a_miss(cam, mask):
    if cam.max() <= cam.min():
        return 0.0  # the old rule: a flat map counted as a miss
    return solutions.my_pointing_game(cam, mask)


def _pointing_on_the_grid_index(cam, mask):  # the classic argmax, with the mask looked up at the cell's index
    if cam.max() <= cam.min():
        return float("nan")
    r, c = np.unravel_index(np.argmax(cam), cam.shape)
    return float(mask[r, c] > 0)


def _pointing_at_the_corner(cam, mask):  # the map enlarged by repetition, then its first maximum
    if cam.max() <= cam.min():
        return float("nan")
    big = np.kron(cam, np.ones((mask.shape[0] // cam.shape[0], mask.shape[1] // cam.shape[1])))
    return float(mask.reshape(-1)[np.argmax(big)] > 0)


def _pointing_upsampled(cam, mask):  # the map upsampled as the library shows it, then its maximum
    from mammo_utils.gradcam.cams import upsample_cams

    if cam.max() <= cam.min():
        return float("nan")
    big = upsample_cams(cam[None].astype(np.float32), mask.shape)[0]
    return float(mask.reshape(-1)[np.argmax(big)] > 0)


def _pointing_any_maximum(cam, mask):
    if cam.max() <= cam.min():
        return float("nan")
    rows, cols = np.nonzero(cam == cam.max())
    return float(any(mask[_cell_centre(cam, mask, r, c)] > 0 for r, c in zip(rows, cols, strict=True)))


def _pointing_transposed(cam, mask):
    if cam.max() <= cam.min():
        return float("nan")
    col, row = np.unravel_index(np.argmax(cam), cam.shape[::-1])
    return float(mask[row, col] > 0)


@pytest.mark.parametrize(("wrong", "says"), [
    (_pointing_flat_is_a_miss, "return float('nan')"),
    (lambda cam, mask: bool(mask.reshape(-1)[np.argmax(cam)] > 0), "the cell's own (row, column)"),  # the old exercise
    (_pointing_on_the_grid_index, "the cell's own (row, column)"),
    (_pointing_at_the_corner, "top-left corner"),
    (_pointing_upsampled, "bilinearly upsampled"),
    (_pointing_any_maximum, "FIRST maximum"),
    (_pointing_transposed, "order (row, column)"),
    (lambda cam, mask: np.unravel_index(np.argmax(cam), cam.shape), "return 1.0 (hit)"),
])
def test_pointing_game_mistakes_fail_with_their_hint(wrong, says, capsys):
    assert checks.check_pointing_game(wrong) is False
    line = _said(capsys)
    assert line.startswith("FAIL (5.2") and says in line, line


def test_the_pointing_game_solution_agrees_with_the_package_on_every_cell():
    rng = np.random.default_rng(0)
    for _ in range(50):
        cam, mask = rng.random((4, 4)), rng.random((128, 128)) > 0.7
        assert solutions.my_pointing_game(cam, mask) == localization.pointing_game(cam, mask)


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
