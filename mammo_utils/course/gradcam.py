"""Checks of notebook 05's exercises (Grad-CAM and the scores of a map).

Each check compares the learner's function with the library's or the package's own: Grad-CAM with
pytorch-grad-cam's ``GradCAM`` (its ``get_cam_image`` on random tensors, and the whole method on a tiny
network), the scores with :mod:`mammo_utils.gradcam.scores`. Cases are chosen so that the usual slips (no ReLU,
summed instead of averaged gradients, a flat map counted as a hit, negative values left in the energy, the
lesion counted outside the breast) give a different answer, and each slip has its own message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mammo_utils.course import check
from mammo_utils.gradcam import scores as localization


def _as_array(value: object) -> np.ndarray:
    """A learner's answer (tensor, array or list) as a float64 array."""
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
    return np.asarray(value, dtype=np.float64)


def _answer(fn: Callable, *args) -> object:
    """Call the learner's function quietly (0/0 is allowed to give NaN); ``None`` means the stub is untouched."""
    with np.errstate(divide="ignore", invalid="ignore"):
        got = fn(*args)
    if got is None:
        raise NotImplementedError
    return got


def _library_grad_cam(activations: torch.Tensor, gradients: torch.Tensor) -> np.ndarray:
    """pytorch-grad-cam's Grad-CAM map of one image on the feature grid, before scaling (ReLU applied, as the
    library's ``compute_cam_per_layer`` does right after ``get_cam_image``)."""
    from pytorch_grad_cam import GradCAM

    net = _tiny_net()
    with GradCAM(model=net, target_layers=[net[0]]) as cam:
        raw = cam.get_cam_image(None, net[0], None, activations[None].numpy(), gradients[None].numpy())
    return np.maximum(raw[0], 0.0).astype(np.float64)


def _tiny_net() -> torch.nn.Sequential:
    """A one-channel convolution, ReLU, global pooling and one logit: the classifier's shape, in miniature."""
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(6, 1)).eval()


def _grad_cam_mistake(got: np.ndarray, activations: torch.Tensor, gradients: torch.Tensor) -> str | None:
    """Name the usual slip when ``got`` matches it (None when it matches none)."""
    a, g = activations.double().numpy(), gradients.double().numpy()
    c, h, w = a.shape
    weights = g.mean(axis=(1, 2))
    raw = (weights[:, None, None] * a).sum(axis=0)
    relu = np.maximum(raw, 0.0)
    peak = relu.max() if relu.max() > 0 else 1.0
    slips = {
        "your map is h*w times too large: a channel's weight is the spatial MEAN of its gradients (1/Z sum), not "
        "their sum": relu * h * w,
        "your map has negative values: Grad-CAM keeps only the evidence FOR the class, apply ReLU to the "
        "weighted sum": raw,
        f"your map is {c} times too small: sum the weighted channels, do not average them": relu / c,
        "your map is scaled to [0, 1]: return it before scaling (the library normalises afterwards)": relu / peak,
        "you multiplied gradients and activations pixel by pixel: first average each channel's gradients over "
        "the grid, one weight per channel": np.maximum((g * a).sum(axis=0), 0.0),
        "ReLU went on the weights, not on the weighted sum": (np.maximum(weights, 0)[:, None, None] * a).sum(axis=0),
    }
    for message, wrong in slips.items():
        if got.shape == wrong.shape and np.allclose(got, wrong, rtol=1e-4, atol=1e-6):
            return message
    return None


@check("5.1 Grad-CAM by hand", hint="alpha_k = mean over the grid of channel k's gradient; the map is "
       "ReLU(sum_k alpha_k * A_k), shape (h, w), not scaled.")
def check_grad_cam(fn: Callable[[torch.Tensor, torch.Tensor], object], trials: int = 6) -> str:
    """Compare ``fn(activations, gradients)`` with pytorch-grad-cam's Grad-CAM: on random (C, h, w) tensors
    (non-square grids, negative evidence present) and on a tiny network run through ``GradCAM`` itself."""
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.image import scale_cam_image
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    gen = torch.Generator().manual_seed(5)
    for trial in range(trials):
        c, h, w = (int(torch.randint(lo, hi, (1,), generator=gen)) for lo, hi in ((3, 65), (2, 7), (3, 8)))
        activations = torch.relu(torch.randn(c, h, w, generator=gen, dtype=torch.float64))  # after a ReLU
        gradients = torch.randn(c, h, w, generator=gen, dtype=torch.float64)
        expected = _library_grad_cam(activations, gradients)
        got = _as_array(_answer(fn, activations.clone(), gradients.clone()))
        if not (got.shape == expected.shape and np.allclose(got, expected, rtol=1e-4, atol=1e-6)):
            mistake = _grad_cam_mistake(got, activations, gradients)
            assert mistake is None, mistake
            assert got.shape == expected.shape, (f"your map has shape {got.shape}; expected {expected.shape}: one "
                                                 "value per cell of the (h, w) feature grid, channels summed")
            raise AssertionError(f"on trial {trial} (C={c}, h={h}, w={w}) your map differs from the library's by "
                                 f"up to {np.abs(got - expected).max():.3g}")
    net, x = _tiny_net(), torch.rand(1, 1, 12, 10, generator=gen)
    with GradCAM(model=net, target_layers=[net[0]]) as cam:
        library = cam(input_tensor=x, targets=[ClassifierOutputTarget(0)])
        acts, grads = cam.activations_and_grads.activations[0][0], cam.activations_and_grads.gradients[0][0]
    mine = scale_cam_image(_as_array(_answer(fn, acts, grads))[None].astype(np.float32), (10, 12))
    assert np.allclose(mine, library, atol=1e-3), ("on a tiny network, your map (upsampled and scaled as the "
                                                   "library does) differs from GradCAM's output")
    return (f"matches pytorch-grad-cam's Grad-CAM on {trials} random feature grids and, upsampled, GradCAM's own "
            "output on a tiny network.")


def _blob(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random rectangular 'lesion' inside a grid of ``shape``."""
    h, w = shape
    r0, c0 = rng.integers(0, h - 1), rng.integers(0, w - 1)
    mask = np.zeros(shape, dtype=bool)
    mask[r0 : r0 + rng.integers(1, 4), c0 : c0 + rng.integers(1, 4)] = True
    return mask


def _pointing_cases(rng: np.random.Generator) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(what, map, mask): random maps on non-square grids, hits and misses, a flat map, tied maxima."""
    cases = []
    for k in range(12):
        shape = (int(rng.integers(4, 9)), int(rng.integers(5, 11)))
        cam, mask = rng.random(shape), _blob(shape, rng)
        if k % 2:  # make every other case a hit, so both answers are tested
            cam[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = 2.0
        cases.append((f"a random {shape[0]}x{shape[1]} map", cam, mask.astype(np.uint8) if k % 3 else mask))
    flat_mask = np.zeros((5, 6), dtype=bool)
    flat_mask[:2, :2] = True
    cases.append(("a flat map (every value equal) with the lesion in the top-left corner", np.full((5, 6), 0.3),
                  flat_mask))
    tie = np.zeros((4, 6))
    tie[1, 4] = tie[3, 0] = 1.0  # two equal maxima: (1, 4) comes first in row-major order
    tie_mask = np.zeros((4, 6), dtype=bool)
    tie_mask[3, 0] = True
    cases.append(("a map with two equal maxima, the first (row-major) outside the lesion", tie, tie_mask))
    first_inside = np.zeros((4, 6), dtype=bool)
    first_inside[1, 4] = True
    cases.append(("a map with two equal maxima, the first (row-major) inside the lesion", tie, first_inside))
    return cases


@check("5.2 Pointing game", hint="np.argmax gives the flat index of the first maximum; np.unravel_index turns it "
       "into (row, column); a hit is mask[row, column] > 0, and a flat map (max == min) is a miss.")
def check_pointing_game(fn: Callable[[np.ndarray, np.ndarray], object]) -> str:
    """Compare ``fn(cam, lesion_mask)`` with :func:`mammo_utils.gradcam.scores.pointing_game` on constructed maps."""
    rng = np.random.default_rng(2)
    for what, cam, mask in _pointing_cases(rng):
        expected = localization.pointing_game(cam, mask)
        got = _answer(fn, cam.copy(), mask.copy())
        assert isinstance(got, bool | np.bool_), f"return True or False, not {type(got).__name__}"
        if bool(got) != expected:
            if "flat" in what:
                raise AssertionError("a flat map points nowhere and must count as a miss, yet you called it a hit")
            if "equal maxima" in what:
                raise AssertionError(f"on {what} you said {bool(got)}: take the FIRST maximum in row-major order, "
                                     "as np.argmax does")
            raise AssertionError(f"on {what} you said {bool(got)}, the package {expected}: check the order "
                                 "(row, column) of the index you look up")
    return "agrees with localization.pointing_game on hits, misses, a flat map and tied maxima."


@check("5.3 Energy inside the lesion", hint="Clip the map's negative values to 0, then divide the sum inside "
       "the lesion by the sum over the whole map; a map that sums to 0 has no energy to share: NaN.")
def check_energy_inside(fn: Callable[[np.ndarray, np.ndarray], object]) -> str:
    """Compare ``fn(cam, lesion_mask)`` with :func:`mammo_utils.gradcam.scores.energy_inside`."""
    rng = np.random.default_rng(3)
    cases = []
    for _ in range(8):
        shape = (int(rng.integers(4, 9)), int(rng.integers(5, 11)))
        cases.append(("a map in [0, 1]", rng.random(shape), _blob(shape, rng)))
        cases.append(("a map with negative values", rng.normal(0.2, 1.0, shape), _blob(shape, rng)))
    cases += [("an all-zero map", np.zeros((4, 5)), _blob((4, 5), rng)),
              ("a map whose values are all negative", -rng.random((4, 5)), _blob((4, 5), rng))]
    for what, cam, mask in cases:
        expected = localization.energy_inside(cam, mask)
        got = float(_as_array(_answer(fn, cam.copy(), mask.copy())))
        if np.isnan(expected):
            assert np.isnan(got), (f"on {what} you returned {got:.3g}: a map with no positive energy has no share "
                                   "inside the lesion, return float('nan')" + (
                                       " (clip negative values first)" if "negative" in what else ""))
            continue
        if np.isclose(got, expected, rtol=1e-6, atol=1e-9):
            continue
        mask_b = mask > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            unclipped = cam[mask_b].sum() / cam.sum()
            mean_inside = np.clip(cam, 0, None)[mask_b].mean()
        assert not np.isclose(got, unclipped), f"on {what}: clip the negative values to 0 before summing"
        assert not np.isclose(got, mean_inside), (f"on {what} you returned the mean value inside the lesion; the "
                                                  "score is the SHARE of the total: sum inside / sum everywhere")
        raise AssertionError(f"on {what} you returned {got:.4f}, the package {expected:.4f}")
    return "agrees with localization.energy_inside, negative values and empty maps included."


@check("5.4 Chance level", hint="Chance = (pixels in the lesion AND in the breast) / (pixels in the breast); "
       "without a breast mask the region is the whole grid.")
def check_chance_level(fn: Callable[..., object]) -> str:
    """Compare ``fn(lesion_mask, breast_mask)`` with :func:`mammo_utils.gradcam.scores.chance_level`."""
    rng = np.random.default_rng(4)
    for k in range(8):
        shape = (int(rng.integers(6, 12)), int(rng.integers(6, 12)))
        breast = np.zeros(shape, dtype=bool)
        breast[:, : int(rng.integers(3, shape[1]))] = True  # the chest wall on the left, as after preprocessing
        lesion = _blob(shape, rng)
        lesion[0, breast.sum(axis=1)[0] - 1 : breast.sum(axis=1)[0] + 1] = True  # straddles the skin line
        for what, region in ((f"case {k} with a breast mask", breast), (f"case {k} without a breast mask", None)):
            expected = localization.chance_level(lesion, region)
            got = float(_as_array(_answer(fn, lesion.copy(), None if region is None else region.copy())))
            if np.isclose(got, expected, rtol=1e-6):
                continue
            assert not np.isclose(got, lesion.sum() / lesion.size), (
                f"on {what} you divided by the whole grid: the region is the breast")
            assert not np.isclose(got, lesion.sum() / breast.sum()), (
                f"on {what} you counted lesion pixels outside the breast: count lesion AND breast")
            raise AssertionError(f"on {what} you returned {got:.4f}, the package {expected:.4f}")
    return "agrees with localization.chance_level, with and without a breast mask."
