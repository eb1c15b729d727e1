"""Checks of notebook 05's exercises (Grad-CAM and the scores of a map).

Each check compares the learner's function with the library's or the package's own: Grad-CAM with
pytorch-grad-cam's ``GradCAM`` (its ``get_cam_image`` on random tensors, and the whole method on a tiny
network), the scores with :mod:`mammo_utils.gradcam.scores`. Cases are chosen so that the usual slips (no ReLU,
summed instead of averaged gradients, a flat map counted as a hit or a miss, negative values left in the energy, the
lesion counted outside the breast, a peak looked up on the wrong grid) give a different answer, and each slip has its
own message.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from mammo_utils.course import check
from mammo_utils.gradcam import cams
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


@check("5.1 Grad-CAM by hand", hint="Two equations, read term by term: one weight per channel from that channel's "
       "gradients (what 1/Z and the double sum do), then the weighted channels combined into one (h, w) map that "
       "keeps only the evidence FOR the class; no scaling to [0, 1].",
       recipe="weights = gradients.mean(dim=(1, 2)) (one alpha_k per channel); map = torch.relu((weights[:, None, "
       "None] * activations).sum(dim=0)); return the map.")
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
    """(what, map, mask): maps on the mask's own grid (hits and misses, tied maxima) and on coarser feature grids
    whose hottest cell is in the top row, the left column or inside, with the lesion at the cell's centre (a
    hit) or in its corner (a miss)."""
    cases = []
    for k in range(12):
        shape = (int(rng.integers(4, 9)), int(rng.integers(5, 11)))
        cam, mask = rng.random(shape), _blob(shape, rng)
        if k % 2:  # make every other case a hit, so both answers are tested
            cam[np.argwhere(mask)[0][0], np.argwhere(mask)[0][1]] = 2.0
        cases.append((f"a random {shape[0]}x{shape[1]} map", cam, mask.astype(np.uint8) if k % 3 else mask))
    for (h, w), (height, width) in (((4, 4), (128, 128)), ((2, 2), (64, 64)), ((3, 5), (96, 160))):
        cell_h, cell_w = height // h, width // w
        for r, c in ((0, w - 2), (h - 1, 0), (0, 0), (h // 2, w // 2)):
            cam = 0.5 * rng.random((h, w))
            cam[r, c] = 1.0
            what = f"a {h}x{w} map on a {height}x{width} image, hottest cell (row {r}, column {c}), lesion "
            centre = np.zeros((height, width), dtype=bool)
            y, x = int((r + 0.5) * cell_h), int((c + 0.5) * cell_w)
            centre[y - 3 : y + 3, x - 3 : x + 3] = True
            corner = np.zeros((height, width), dtype=bool)
            corner[r * cell_h : r * cell_h + 4, c * cell_w : c * cell_w + 4] = True
            cases += [(what + "at the cell's centre", cam, centre), (what + "in the cell's corner", cam, corner)]
    tie = np.zeros((4, 6))
    tie[1, 4] = tie[3, 0] = 1.0  # two equal maxima: (1, 4) comes first in row-major order
    tie_mask = np.zeros((4, 6), dtype=bool)
    tie_mask[3, 0] = True
    cases.append(("a map with two equal maxima, the first (row-major) outside the lesion", tie, tie_mask))
    first_inside = np.zeros((4, 6), dtype=bool)
    first_inside[1, 4] = True
    cases.append(("a map with two equal maxima, the first (row-major) inside the lesion", tie, first_inside))
    return cases


def _first_peak(cam: np.ndarray) -> tuple[int, int]:
    return tuple(int(v) for v in np.unravel_index(int(np.argmax(cam)), cam.shape))


def _grid_index(cam: np.ndarray, mask: np.ndarray) -> bool:
    r, c = _first_peak(cam)
    return bool(mask[min(r, mask.shape[0] - 1), min(c, mask.shape[1] - 1)])


def _cell_corner(cam: np.ndarray, mask: np.ndarray) -> bool:
    r, c = _first_peak(cam)
    return bool(mask[r * mask.shape[0] // cam.shape[0], c * mask.shape[1] // cam.shape[1]])


def _upsampled_maximum(cam: np.ndarray, mask: np.ndarray) -> bool:
    x, y = cams.cam_peak(cams.upsample_cams(cam[None].astype(np.float32), mask.shape)[0])
    return bool(mask[y, x])


def _transposed(cam: np.ndarray, mask: np.ndarray) -> bool | None:
    a, b = np.unravel_index(int(np.argmax(cam)), cam.shape[::-1])
    return bool(mask[b, a]) if b < mask.shape[0] and a < mask.shape[1] else None


# The usual slips of the pointing game, as functions of (map, mask) -> hit, and what to say about each.
POINTING_SLIPS = {
    "you looked the lesion up at the cell's own (row, column) on the image: carry the cell to the image first, "
    "each cell covers (H / h) x (W / w) pixels": _grid_index,
    "you pointed at the cell's top-left corner (what the first maximum of a map enlarged with np.kron or "
    "np.repeat gives): point at the cell's centre": _cell_corner,
    "you took the maximum of the bilinearly upsampled map: next to the top row and the left column it is a plateau "
    "reaching the image's border, and argmax takes its first pixel there; take the maximum on the map's own grid": _upsampled_maximum,
    "check the order (row, column) of the index you look up": _transposed,
}


def _pointing_slip(answers: list[float], cases: list[tuple[str, np.ndarray, np.ndarray]]) -> str | None:
    """The slip whose answers are the learner's on every case it applies to (None when none is)."""
    for message, slip in POINTING_SLIPS.items():
        theirs = [slip(cam, np.asarray(mask) > 0) for _, cam, mask in cases]
        if all(t is None or float(t) == a for t, a in zip(theirs, answers, strict=True)):
            return message
    return None


@check("5.2 Pointing game", hint="The map makes one claim: which cell of its own grid holds the most evidence. "
       "Point at the middle of that cell on the image and ask whether the lesion is there; a map with no maximum "
       "makes no claim at all.",
       recipe="If cam.max() == cam.min() return float('nan'). Else r, c = np.unravel_index(np.argmax(cam), "
       "cam.shape) (the first maximum); with (h, w) = cam.shape and (H, W) = lesion_mask.shape, the cell's "
       "centre is row int((r + 0.5) * H / h), column int((c + 0.5) * W / w); return float(lesion_mask[row, "
       "column] > 0).")
def check_pointing_game(fn: Callable[[np.ndarray, np.ndarray], object]) -> str:
    """Compare ``fn(cam, lesion_mask)`` with :func:`mammo_utils.gradcam.scores.pointing_game` on constructed maps:
    on the mask's own grid and on coarser feature grids, hits and misses, tied maxima, and a flat map (NaN)."""
    cases = _pointing_cases(np.random.default_rng(2))
    answers = []
    for _, cam, mask in cases:
        got = _answer(fn, cam.copy(), mask.copy())
        assert isinstance(got, bool | np.bool_ | int | float | np.integer | np.floating), (
            f"return 1.0 (hit), 0.0 (miss) or float('nan') (no peak), not {type(got).__name__}")
        answers.append(float(got))
    for (what, cam, mask), got in zip(cases, answers, strict=True):
        expected = localization.pointing_game(cam, mask)
        if got == expected:
            continue
        if "equal maxima" in what:
            raise AssertionError(f"on {what} you said {got:g}: take the FIRST maximum in row-major order, as "
                                 "np.argmax does")
        slip = _pointing_slip(answers, cases)
        raise AssertionError(f"on {what} you said {got:g}, the package {expected:g}" + (f": {slip}" if slip else ""))
    flat = np.full((4, 4), 0.3)
    flat_mask = np.zeros((128, 128), dtype=bool)
    flat_mask[:40, :40] = True
    with np.errstate(divide="ignore", invalid="ignore"):
        got = fn(flat.copy(), flat_mask.copy())
    assert got is not None and np.isnan(float(got)), (
        f"on a flat map (every value equal) you said {got!r}: it has no maximum, so it points nowhere and makes "
        "no claim, neither a hit nor a miss: return float('nan'), which the averages leave out")
    return "agrees with scores.pointing_game on the image's grid and on coarse feature grids, ties and a flat map."


@check("5.3 Energy inside the lesion", hint="The score is a SHARE of the map's positive mass: how much of it falls "
       "inside the mark. Negative values are not mass, and a map with no mass has no share to give.",
       recipe="cam = np.clip(cam, 0, None); total = cam.sum(); return float('nan') if total <= 0, else "
       "float(cam[lesion_mask > 0].sum() / total).")
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


@check("5.4 Chance level", hint="A blind guess lands anywhere in the breast with equal chance, so it hits the "
       "lesion as often as the lesion's share of the breast; only lesion pixels inside the breast can be hit.",
       recipe="region = breast_mask > 0 (np.ones_like(lesion) without a breast mask); return "
       "((lesion_mask > 0) & region).sum() / region.sum() as a float.")
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
