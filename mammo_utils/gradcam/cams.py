"""Class activation maps (CAMs) of the one-channel ResNet-50 classifier, and a check that they mean something.

The CAM methods are pytorch-grad-cam's (Gildenblat et al.), one name per class in :data:`CAM_METHODS`:
Grad-CAM (Selvaraju et al. 2017), Grad-CAM++ (Chattopadhay et al. 2018) and EigenCAM (Muhammad & Yeasin
2020, with the sign fixed: :class:`SignedEigenCAM`). Adding another method of the library is one line there.
Every map is computed on ``backbone.layer4[-1]``, whose feature grid is the image divided by the network's
stride (:func:`cam_grid_size`), and upsampled to the input.

The classifier has one logit, so the target is the logit itself (``ClassifierOutputTarget(0)`` returns
``output[0]``, a scalar per image; ``BinaryClassifierOutputTarget(1)`` would return the same value as a
one-element tensor).

Maps live on the network input grid, which *is* the preprocessed image; :func:`cam_to_original` carries them
back to the original image's pixels through the :class:`~mammo_utils.prepare.preprocess.Transform` (undoing resize,
pad, flip and crop).

:func:`randomization_check` is the model-randomisation test of Adebayo et al. 2018 ("Sanity Checks for
Saliency Maps"): a map that barely changes when the top of the network is re-initialised explains nothing
about what the model learnt.
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


def _cam_batch(cam, batch: torch.Tensor) -> np.ndarray:
    """Maps of one batch: with gradients for the methods that use them, without for the others."""
    targets = positive_class_targets(len(batch))
    if not cam.uses_gradients:  # the hooks skip tensors without grad: nothing to store
        with torch.no_grad():
            return cam(input_tensor=batch, targets=targets)
    with torch.enable_grad():
        # Gradients reach layer4 even when the backbone's weights are frozen (linear probe).
        return cam(input_tensor=batch.detach().requires_grad_(True), targets=targets)


def compute_cams(
    model: Classifier,
    images: torch.Tensor,
    method: str = "gradcam",
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> np.ndarray:
    """Class activation maps of the positive class on the network input grid.

    Args:
        model: a :class:`~mammo_utils.models.Classifier` (``model.backbone.layer4[-1]`` is the target layer).
        images: (B, 1, S, S) images in [0, 1] (the classifier normalises them itself).
        method: a name of :data:`CAM_METHODS`.
        batch_size: images per forward/backward pass.
        device: where to run (a stage passes ``placement(cfg).device``); defaults to the model's device.

    Returns:
        (B, S, S) float32 maps in [0, 1], each scaled to its own maximum (a flat map is all zeros).
    """
    (method,) = check_methods([method])
    if device is not None:
        model = model.to(device)
    device = next(model.parameters()).device
    out = [np.zeros((0, *images.shape[-2:]), dtype=np.float32)]
    with CAM_METHODS[method](model=model, target_layers=[target_layer(model)]) as cam:
        for batch in images.split(batch_size):
            maps = _cam_batch(cam, batch.float().to(device))
            out.append(np.clip(np.nan_to_num(maps, nan=0.0), 0.0, 1.0).astype(np.float32))
    return np.concatenate(out)


def cam_peak(cam: np.ndarray) -> tuple[int, int] | None:
    """``(x, y)`` = (column, row) of the map's maximum on its own grid; None for a flat map (no peak)."""
    cam = np.asarray(cam)
    if cam.size == 0 or np.ptp(cam) <= 0:
        return None
    row, col = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return int(col), int(row)


def cam_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray:
    """Carry a (S, S) map on the network input back onto the original image's (H, W) pixel grid."""
    return transform.to_original_image(np.asarray(cam, dtype=np.float32))


def peak_to_original(cam: np.ndarray, transform: Transform) -> np.ndarray:
    """Original-image coordinates ``(x, y)`` of the CAM's maximum (of its first pixel for a flat map)."""
    col, row = cam_peak(cam) or (0, 0)
    return transform.to_original(np.array([[col, row]], dtype=np.float64))[0]


@dataclass(frozen=True)
class RandomizationCheck:
    """Maps of a trained model and of its randomised copy, and how alike they are.

    Attributes:
        trained: (B, S, S) maps of the model as given.
        randomized: (B, S, S) maps of the copy whose ``backbone.layer4`` and ``head`` were re-initialised.
        spearman: (B,) rank correlation of each image's two maps (NaN where a map is flat). Near 1: the map
            does not depend on what the top of the network learnt.
    """

    trained: np.ndarray
    randomized: np.ndarray
    spearman: np.ndarray


def randomize_top(model: Classifier, seed: int = 0) -> Classifier:
    """A copy of ``model`` with ``backbone.layer4`` and ``head`` re-initialised (seeded); ``model`` is unchanged.

    The layers get torchvision's initialisation of a new ResNet-50 (He-normal convolutions, unit batch-norm
    scales, default linear layers), so the copy is what these layers were before any training.
    """
    device = next(model.parameters()).device
    copy_ = copy.deepcopy(model).cpu()  # drawn on the CPU: the same weights on every device
    with torch.random.fork_rng(devices=[]):  # the caller's random stream is left where it was
        torch.manual_seed(seed)
        for module in (*copy_.backbone.layer4.modules(), *copy_.head.modules()):
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
    model: Classifier, images: torch.Tensor, method: str = "gradcam", seed: int = 0, batch_size: int = 16
) -> RandomizationCheck:
    """Model-randomisation sanity check (Adebayo et al. 2018) of one CAM method.

    Args:
        model: a trained :class:`~mammo_utils.models.Classifier` (left unchanged).
        images: (B, 1, S, S) images in [0, 1].
        method: a name of :data:`CAM_METHODS`.
        seed: seed of the re-initialisation.
        batch_size: images per forward/backward pass.
    """
    trained = compute_cams(model, images, method, batch_size)
    randomized = compute_cams(randomize_top(model, seed), images, method, batch_size)
    return RandomizationCheck(trained, randomized, spearman_per_image(trained, randomized))
