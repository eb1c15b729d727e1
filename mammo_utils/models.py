"""The networks: torchvision's ResNet-50 with a one-channel stem, a classifier head, and safe checkpoints.

Mammograms are grey, so the first convolution takes one channel. With ImageNet weights its three RGB kernels
are summed into one, which is exactly what repeating the grey channel three times would compute, at a third
of the cost of the first layer. Everything else is ``torchvision.models.resnet50`` unchanged: state dicts are
interchangeable with torchvision's. (On CPUs with bf16 instructions the trainer switches the blocks to a
faster but equivalent implementation, :mod:`mammo_utils.runs.fast_cpu`; nothing here depends on it.)
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torchvision

from mammo_utils.errors import CheckpointError, MammoError
from mammo_utils.runs.devices import Placement, prepare_input, prepare_model
from mammo_utils.runs.files import atomic_write_bytes

log = logging.getLogger(__name__)

FEATURE_DIM = 2048
BACKBONE_ARCH = "resnet50-1ch"
CLASSIFIER_ARCH = "resnet50-1ch-classifier"
# Grey-level statistics of ImageNet (mean and std of the luminance), used for every initialisation so the
# three inits see identical inputs.
GREY_MEAN, GREY_STD = 0.449, 0.226


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to the network's input scale."""
    return (x - GREY_MEAN) / GREY_STD


def imagenet_weights_path() -> Path:
    """Where torchvision keeps the ResNet-50 ImageNet weights in the local torch cache."""
    url = torchvision.models.ResNet50_Weights.IMAGENET1K_V2.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def resnet50_backbone(init: str = "random") -> nn.Module:
    """A torchvision ResNet-50 with a one-channel first convolution and no classification layer.

    Args:
        init: ``random`` or ``imagenet`` (weights read from the local torch cache only; never downloaded).

    Returns:
        A module mapping (B, 1, H, W) to (B, 2048) features. ``layer4[-1]`` is the Grad-CAM target layer.
    """
    net = torchvision.models.resnet50(weights=None)
    if init == "imagenet":
        path = imagenet_weights_path()
        if not path.exists():
            raise MammoError(
                f"ImageNet weights are not in the local torch cache ({path}). On a machine with internet, run "
                "`python -c \"import torchvision; torchvision.models.resnet50(weights='IMAGENET1K_V2')\"` and "
                "copy the file there, or leave 'imagenet' out of finetune.inits."
            )
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    elif init != "random":
        raise MammoError(f"Unknown backbone init {init!r}; use random or imagenet (simclr loads a checkpoint).")
    old = net.conv1
    conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    with torch.no_grad():
        conv1.weight.copy_(old.weight.sum(dim=1, keepdim=True))
    net.conv1 = conv1
    net.fc = nn.Identity()
    return net


class Classifier(nn.Module):
    """Backbone plus a linear head with one logit (positive class = ``task`` is 1)."""

    def __init__(self, backbone: nn.Module | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else resnet50_backbone()
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(FEATURE_DIM, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images in [0, 1] → (B, 1) logits."""
        return self.head(self.backbone(normalize(x)))


def _save(path: Path, payload: dict) -> Path:
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _load(path: Path, arch: str, hint: str) -> dict:
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}. {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same thing to a person
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}). {hint}") from None
    if not isinstance(payload, dict) or payload.get("arch") != arch:
        found = payload.get("arch") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"{path} holds a {found!r} checkpoint, not {arch!r}. {hint}")
    return payload


def save_backbone(path: Path, backbone: nn.Module, meta: dict | None = None, arch: str = BACKBONE_ARCH) -> Path:
    """Write a module's weights (plain tensors only, loadable with ``weights_only=True``) tagged with ``arch``."""
    state = {k: v.detach().cpu().contiguous() for k, v in backbone.state_dict().items()}
    return _save(path, {"arch": arch, "state_dict": state, "meta": meta or {}})


def _load_into(path: Path, arch: str, model: nn.Module, what: str, hint: str) -> dict:
    """Load ``path``'s weights into ``model``; returns the payload's meta."""
    payload = _load(path, arch, hint)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {what}: {str(exc).splitlines()[0]}") from None
    return dict(payload.get("meta", {}))


def load_backbone(path: Path, hint: str = "") -> nn.Module:
    """Read a backbone written by :func:`save_backbone`; clear errors for missing, corrupt or foreign files."""
    backbone = resnet50_backbone()
    _load_into(path, BACKBONE_ARCH, backbone, "a one-channel ResNet-50", hint)
    return backbone


def save_classifier(path: Path, model: Classifier, meta: dict | None = None) -> Path:
    return save_backbone(path, model, meta, arch=CLASSIFIER_ARCH)


def load_classifier(path: Path, hint: str = "") -> tuple[Classifier, dict]:
    """Read a classifier written by :func:`save_classifier`; returns the model (eval mode) and its meta."""
    model = Classifier()
    meta = _load_into(path, CLASSIFIER_ARCH, model, "the classifier", hint)
    return model.eval(), meta


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, where: Placement | None = None,
            batch_size: int = 64) -> np.ndarray:
    """Probability of the positive class for (N, 1, S, S) images in [0, 1] (on the CPU).

    Args:
        model: the classifier (put in eval mode here).
        images: the images. where: device, precision and memory format (default: the CPU in fp32).
        batch_size: images per forward pass.
    """
    where = where or Placement("cpu", torch.device("cpu"), "32-true", False)
    model = prepare_model(model.eval(), where)
    out = []
    for i in range(0, len(images), batch_size):
        with where.autocast():
            logits = model(prepare_input(images[i : i + batch_size].float(), where)).squeeze(1)
        out.append(torch.sigmoid(logits.float()).cpu())
    model.to("cpu", memory_format=torch.contiguous_format)
    return torch.cat(out).numpy() if out else np.zeros(0)
