"""Class activation maps (CAMs) of the one-channel ResNet-50 classifier, and a check that they mean something.

The CAM methods are pytorch-grad-cam's (Gildenblat et al.), one name per class in :data:`CAM_METHODS`:
Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and EigenCAM (Muhammad & Yeasin
2020, with the sign fixed: :class:`SignedEigenCAM`). Adding another method of the library is one line there.
Every map is computed on ``backbone.layer4[-1]``, whose feature grid is the image divided by the network's
stride (:func:`cam_grid_size`), and upsampled to the input (:func:`upsample_cams`, as the library does);
``compute_cams(..., on_grid=True)`` keeps the maps on that grid, where their maximum is scored
(:func:`cam_peak`, :func:`mammo_utils.gradcam.scores.pointing_game`).

With global average pooling and one linear logit after that layer, the gradient of the logit with respect to
every cell of feature map k is the head's weight w_k divided by the number of cells, so Grad-CAM on it is
exactly CAM (Zhou et al. 2016, "Learning Deep Features for Discriminative Localization"): ReLU(sum_k w_k A^k),
up to a positive factor that the scaling removes.

The classifier has one logit, so the target is the logit itself (``ClassifierOutputTarget(0)`` returns
``output[0]``, a scalar per image; ``BinaryClassifierOutputTarget(1)`` would return the same value as a
one-element tensor).

Maps live on the network input grid, which *is* the preprocessed image; :func:`cam_to_original` carries them
back to the original image's pixels through the :class:`~mammo_utils.prepare.preprocess.Transform` (undoing resize,
pad, flip and crop).

:func:`randomization_check` is the cascading model-randomisation test of Adebayo et al. 2018 ("Sanity Checks
for Saliency Maps"): the layers are re-initialised from the output down (:func:`randomization_cascade`: the head
first, then layer4's blocks from the last), and a map that barely changes explains nothing about what those
layers learnt.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from pytorch_grad_cam import EigenCAM, GradCAM, GradCAMPlusPlus
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from pytorch_grad_cam.utils.svd_on_activations import get_2d_projection_with_sign_correction
from scipy.stats import spearmanr

from mammo_utils.errors import ConfigError
from mammo_utils.prepare.preprocess import Transform

if TYPE_CHECKING:
    from mammo_utils.models import Classifier

TARGET_LAYER = "backbone.layer4[-1]"


class SignedEigenCAM(EigenCAM):
    """EigenCAM with the sign of the first principal component fixed.

    SVD leaves the component's sign arbitrary; the library's EigenCAM then keeps the positive half, which
    can be the background. The library's own sign correction (Seg-Eigen-CAM, Chung & Ying 2025, Eq. 13)
    makes the larger-magnitude side positive.
    """

    def get_cam_image(self, input_tensor, target_layer, target_category, activations, grads, eigen_smooth):
        return get_2d_projection_with_sign_correction(activations)


# name (as written in the setting gradcam.cams) -> pytorch-grad-cam class
CAM_METHODS = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus, "eigencam": SignedEigenCAM}


def check_methods(names: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """The CAM method names of the setting ``gradcam.cams``, in order and without repeats.

    Raises:
        ConfigError: a name is not in :data:`CAM_METHODS`, or no name is given.
    """
    for name in names:
        if name not in CAM_METHODS:
            raise ConfigError(
                f"Unknown CAM method {name!r} in gradcam.cams. Choose from {', '.join(CAM_METHODS)}, "
                "e.g. --set gradcam.cams=gradcam,eigencam."
            )
    if not names:
        raise ConfigError(f"gradcam.cams is empty. Name at least one of {', '.join(CAM_METHODS)}.")
    return tuple(dict.fromkeys(names))


def target_layer(model: Classifier) -> torch.nn.Module:
    """The layer every CAM is computed on: the last bottleneck block of the backbone (:data:`TARGET_LAYER`)."""
    return model.backbone.layer4[-1]


def positive_class_targets(n: int) -> list[ClassifierOutputTarget]:
    """One target per image: the single logit (positive class = the task's label is 1)."""
    return [ClassifierOutputTarget(0) for _ in range(n)]


def cam_grid_size(model: Classifier, size_px: int) -> tuple[int, int]:
    """(rows, columns) of the feature grid a CAM is computed on, for a ``size_px`` square input.

    A CAM has one value per cell of this grid (e.g. 4 x 4 at 128 px for a ResNet-50), upsampled to the image:
    it cannot place anything more finely than one cell. Measured with a forward hook on :func:`target_layer`
    rather than assumed from the stride.
    """
    shapes = []
    hook = target_layer(model).register_forward_hook(lambda _m, _i, out: shapes.append(tuple(out.shape[-2:])))
    was_training = model.training
    try:
        model.eval()  # no update of the batch-norm statistics by this probe
        with torch.no_grad():
            model(torch.zeros(1, 1, size_px, size_px, device=next(model.parameters()).device))
    finally:
        hook.remove()
        model.train(was_training)
    return shapes[0]


def _on_grid(cam_class: type) -> type:
    """``cam_class`` without the upsampling: with no target size the library's ``scale_cam_image`` only scales
    each map to [0, 1], so the maps stay on the target layer's feature grid."""
    return type(f"{cam_class.__name__}OnGrid", (cam_class,), {"get_target_width_height": lambda self, x: None})


def _cam_batch(cam, batch: torch.Tensor) -> np.ndarray:
    """Maps of one batch: with gradients for the methods that use them, without for the others."""
    targets = positive_class_targets(len(batch))
    if not cam.uses_gradients:  # the hooks skip tensors without grad: nothing to store
        with torch.no_grad():
            return cam(input_tensor=batch, targets=targets)
    with torch.enable_grad():
        # Gradients reach layer4 even when the backbone's weights are frozen (linear probe).
        return cam(input_tensor=batch.detach().requires_grad_(True), targets=targets)


def upsample_cams(grid_maps: np.ndarray, size_px: tuple[int, int]) -> np.ndarray:
    """Feature-grid maps (B, h, w) upsampled to (B, H, W) images as pytorch-grad-cam does it: bilinear (OpenCV,
    the edge cells replicated outwards), then each map scaled to [0, 1] again."""
    from pytorch_grad_cam.utils.image import scale_cam_image

    height, width = size_px
    if len(grid_maps) == 0:
        return np.zeros((0, height, width), dtype=np.float32)
    return scale_cam_image(scale_cam_image(np.asarray(grid_maps, dtype=np.float32), (width, height)))


def compute_cams(
    model: Classifier,
    images: torch.Tensor,
    method: str = "gradcam",
    batch_size: int = 16,
    device: str | torch.device | None = None,
    on_grid: bool = False,
) -> np.ndarray:
    """Class activation maps of the positive class, on the network input grid or on the feature grid.

    Args:
        model: a :class:`~mammo_utils.models.Classifier` (``model.backbone.layer4[-1]`` is the target layer).
        images: (B, 1, S, S) images in [0, 1] (the classifier normalises them itself).
        method: a name of :data:`CAM_METHODS`.
        batch_size: images per forward/backward pass.
        device: where to run (a stage passes the device it runs on); defaults to the model's device.
        on_grid: return the maps on the target layer's (h, w) feature grid (:func:`cam_grid_size`), as computed,
            instead of upsampled to the input.

    Returns:
        (B, S, S) float32 maps in [0, 1] (with ``on_grid``, (B, h, w)), each scaled to its own maximum (a flat
        map is all zeros). The upsampled maps are :func:`upsample_cams` of the grid maps, the library's own
        output.
    """
    (method,) = check_methods([method])
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    out = []
    with _on_grid(CAM_METHODS[method])(model=model, target_layers=[target_layer(model)]) as cam:
        for batch in images.split(batch_size):
            maps = _cam_batch(cam, batch.float().to(device))
            out.append(np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0).astype(np.float32))
    maps = np.concatenate(out) if out else np.zeros((0, *cam_grid_size(model, images.shape[-1])), np.float32)
    return maps if on_grid else upsample_cams(maps, tuple(images.shape[-2:]))


def cam_peak(cam: np.ndarray, shape: tuple[int, int] | None = None) -> tuple[int, int] | None:
    """``(x, y)`` = (column, row) where the map points; None for a flat map (no peak).

    Args:
        cam: an (h, w) map; among tied maxima the first in row-major order counts (``np.argmax``).
        shape: (H, W) of the image the map belongs to, when ``cam`` is on a coarser grid (the feature grid of
            ``compute_cams(..., on_grid=True)``). The peak is then the centre of the hottest cell on the image:
            the pixel ``(floor((c + 0.5) W / w), floor((r + 0.5) H / h))``. Without it (or when the shapes are
            equal) every cell is a pixel and the peak is the maximum itself.
    """
    cam = np.asarray(cam)
    if cam.size == 0 or not np.isfinite(cam).all() or np.ptp(cam) <= 0:
        return None
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    (h, w), (height, width) = cam.shape, shape or cam.shape
    return int((col + 0.5) * width / w), int((row + 0.5) * height / h)


def cam_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray:
    """Carry a (S, S) map on the network input back onto the original image's (H, W) pixel grid."""
    return transform.to_original_image(np.asarray(cam, dtype=np.float32))


def peak_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray | None:
    """Original-image coordinates ``(x, y)`` of where the map points (:func:`cam_peak` on the network input of
    ``transform``; ``cam`` on the input grid or on the feature grid); None for a flat map."""
    peak = cam_peak(cam, (transform.out_size, transform.out_size))
    if peak is None:
        return None
    return transform.to_original(np.array([peak], dtype=np.float64))[0]


def randomization_cascade(model: Classifier) -> tuple[str, ...]:
    """Adebayo et al.'s cascade for ``model``: the head, then the blocks of layer4 from the last down (ResNet-18:
    ``layer4.1, layer4.0``; ResNet-50: ``layer4.2, layer4.1, layer4.0``). The head comes first: a map computed on
    layer4 that does not change when the head does cannot be explaining this head's logit."""
    blocks = [f"backbone.layer4.{i}" for i in range(len(model.backbone.layer4))]
    return ("head", *reversed(blocks))


@dataclass(frozen=True)
class RandomizationCheck:
    """Maps of a trained model and of copies randomised step by step from the top, and how alike they are.

    Attributes:
        trained: (B, S, S) maps of the model as given.
        layers: the cascade's steps: step k re-initialised ``layers[: k + 1]`` (the head first).
        randomized: (K, B, S, S) maps after each step of the cascade.
        spearman: (K, B) rank correlation of each image's trained map with its map after each step (NaN where a
            map is flat). Near 1: the map does not depend on what the re-initialised layers learnt.
    """

    trained: np.ndarray
    layers: tuple[str, ...]
    randomized: np.ndarray
    spearman: np.ndarray


def randomize_layers(model: Classifier, layers: tuple[str, ...] | list[str], seed: int = 0) -> Classifier:
    """A copy of ``model`` with the named submodules re-initialised (seeded); ``model`` is unchanged.

    The layers get torchvision's initialisation of a new ResNet-50 (He-normal convolutions, unit batch-norm
    scales, default linear layers), so the copy holds what these layers were before any training. They are
    drawn in the order given from one seeded stream, so the steps of a cascade (each list extending the last)
    share the weights of the layers they have in common.

    Args:
        model: a :class:`~mammo_utils.models.Classifier`.
        layers: names as ``model.named_modules()`` gives them, e.g. ``("head", "backbone.layer4.2")``.
        seed: seed of the re-initialisation.
    """
    device = next(model.parameters()).device
    copy_ = copy.deepcopy(model).cpu()  # drawn on the CPU: the same weights on every device
    named = dict(copy_.named_modules())
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left where it was
        # A stream of its own: seeded with ``seed`` alone it would redraw the very weights a classifier built after
        # ``seed_everything(seed)`` started from, and a head that fine-tuning barely moved would come back as it was.
        torch.manual_seed(int(np.random.SeedSequence([seed, 2018]).generate_state(1)[0]))
        for name in layers:
            for module in named[name].modules():
                if isinstance(module, torch.nn.Conv2d):
                    torch.nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                elif isinstance(module, torch.nn.BatchNorm2d):
                    module.reset_parameters()  # scale 1, shift 0, running mean 0 and variance 1
                elif isinstance(module, torch.nn.Linear):
                    module.reset_parameters()
    return copy_.to(device).eval()


def spearman_per_image(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman rank correlation between ``a[i]`` and ``b[i]`` over pixels, for each image i (NaN if flat)."""
    out = np.full(len(a), np.nan)
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if np.ptp(x) > 0 and np.ptp(y) > 0:  # a constant map has no ranks to correlate
            out[i] = spearmanr(np.ravel(x), np.ravel(y)).statistic
    return out


def randomization_check(
    model: Classifier,
    images: torch.Tensor,
    method: str = "gradcam",
    seed: int = 0,
    batch_size: int = 16,
    layers: tuple[str, ...] | None = None,
) -> RandomizationCheck:
    """Cascading model-randomisation sanity check (Adebayo et al. 2018) of one CAM method.

    Step k re-initialises ``layers[: k + 1]`` (:func:`randomize_layers`): the head alone first, then one more
    block of layer4 at each step, from the last down.

    Args:
        model: a trained :class:`~mammo_utils.models.Classifier` (left unchanged).
        images: (B, 1, S, S) images in [0, 1].
        method: a name of :data:`CAM_METHODS`.
        seed: seed of the re-initialisation.
        batch_size: images per forward/backward pass.
        layers: the cascade, from the output down (default :func:`randomization_cascade` of ``model``).
    """
    layers = tuple(layers) if layers is not None else randomization_cascade(model)
    trained = compute_cams(model, images, method, batch_size)
    randomized = np.stack([compute_cams(randomize_layers(model, layers[: k + 1], seed), images, method, batch_size)
                           for k in range(len(layers))])
    spearman = np.stack([spearman_per_image(trained, maps) for maps in randomized])
    return RandomizationCheck(trained, layers, randomized, spearman)
