"""The networks: torchvision's ResNet-18 or ResNet-50 with a one-channel stem, a classifier head, and safe
checkpoints.

Mammograms are grey, so the first convolution takes one channel. With ImageNet weights its three RGB kernels
are summed into one, which is exactly what repeating the grey channel three times would compute, at a third
of the cost of the first layer. Everything else is ``torchvision.models.resnet18`` / ``resnet50`` unchanged:
state dicts are interchangeable with torchvision's. The paper's network is ResNet-50 (profile ``full``); the
laptop demo trains ResNet-18, which learns the same way at about a third of the cost on 64 px crops
(``backbone`` in :mod:`mammo_utils.config`). (On CPUs with bf16 instructions the trainer switches the blocks to
a faster but equivalent implementation, :mod:`mammo_utils.runs.fast_cpu`; nothing here depends on it.)
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

# architecture -> width of its features (the input of the projection head and of the classifier)
FEATURE_DIMS = {"resnet18": 512, "resnet50": 2048}
# Grey-level statistics of ImageNet (mean and std of the luminance), used for every initialisation so the
# three inits see identical inputs.
GREY_MEAN, GREY_STD = 0.449, 0.226
_IMAGENET = {"resnet18": torchvision.models.ResNet18_Weights.IMAGENET1K_V1,
             "resnet50": torchvision.models.ResNet50_Weights.IMAGENET1K_V2}


def normalize(x: torch.Tensor) -> torch.Tensor:
    """Images in [0, 1] to the network's input scale."""
    return (x - GREY_MEAN) / GREY_STD


def imagenet_weights_path(arch: str = "resnet50") -> Path:
    """Where torchvision keeps the ImageNet weights of ``arch`` in the local torch cache."""
    return Path(torch.hub.get_dir()) / "checkpoints" / _IMAGENET[arch].url.rsplit("/", 1)[-1]


def make_backbone(arch: str = "resnet50", init: str = "random") -> nn.Module:
    """A torchvision ResNet with a one-channel first convolution and no classification layer.

    Args:
        arch: ``resnet18`` or ``resnet50`` (:data:`FEATURE_DIMS`).
        init: ``random`` or ``imagenet`` (weights read from the local torch cache only; never downloaded).

    Returns:
        A module mapping (B, 1, H, W) to (B, 512) or (B, 2048) features. ``layer4[-1]`` is the Grad-CAM target.
    """
    if arch not in FEATURE_DIMS:
        raise MammoError(f"Unknown backbone {arch!r}; use one of {', '.join(FEATURE_DIMS)}.")
    net = getattr(torchvision.models, arch)(weights=None)
    if init == "imagenet":
        path = imagenet_weights_path(arch)
        if not path.exists():
            raise MammoError(
                f"ImageNet weights are not in the local torch cache ({path}). On a machine with internet, run "
                f"`python -c \"import torchvision; torchvision.models.{arch}(weights='{_IMAGENET[arch].name}')\"` "
                "and copy the file there, or leave 'imagenet' out of finetune.inits."
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

    def __init__(self, backbone: nn.Module | None = None, dropout: float = 0.0, arch: str = "resnet50") -> None:
        super().__init__()
        self.backbone = backbone if backbone is not None else make_backbone(arch)
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(feature_dim(self.backbone), 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) images in [0, 1] → (B, 1) logits."""
        return self.head(self.backbone(normalize(x)))


def backbone_arch(backbone: nn.Module) -> str:
    """``resnet18`` or ``resnet50``: which architecture a backbone is (from its blocks)."""
    from torchvision.models.resnet import BasicBlock

    return "resnet18" if isinstance(backbone.layer1[0], BasicBlock) else "resnet50"


def feature_dim(backbone: nn.Module) -> int:
    """The width of a backbone's features: 512 for ResNet-18, 2048 for ResNet-50."""
    return FEATURE_DIMS[backbone_arch(backbone)]


def _save(path: Path, payload: dict) -> Path:
    import io

    buf = io.BytesIO()
    torch.save(payload, buf)
    atomic_write_bytes(Path(path), buf.getvalue())
    return Path(path)


def _load(path: Path, kind: str, hint: str) -> tuple[dict, str]:
    """The payload of a checkpoint of ``kind`` (``backbone`` or ``classifier``) and its architecture; clear errors
    for a missing, unreadable or foreign file."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"No checkpoint at {path}. {hint}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # pickle, zip and torch errors all mean the same thing to a person
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(exc).__name__}). {hint}") from None
    tags = {f"{a}-1ch" + ("-classifier" if kind == "classifier" else ""): a for a in FEATURE_DIMS}
    found = payload.get("arch") if isinstance(payload, dict) else type(payload).__name__
    if found not in tags:
        raise CheckpointError(f"{path} holds a {found!r} checkpoint, not a one-channel ResNet {kind}. {hint}")
    return payload, tags[found]


def _load_into(path: Path, payload: dict, model: nn.Module, what: str) -> dict:
    """Load ``payload``'s weights into ``model``; returns its meta."""
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path} does not fit {what}: {str(exc).splitlines()[0]}") from None
    return dict(payload.get("meta", {}))


def save_backbone(path: Path, backbone: nn.Module, meta: dict | None = None) -> Path:
    """Write a backbone's weights (plain tensors only, loadable with ``weights_only=True``), tagged with its
    architecture (``resnet18-1ch`` or ``resnet50-1ch``)."""
    return _save_tagged(path, backbone, f"{backbone_arch(backbone)}-1ch", meta)


def _save_tagged(path: Path, module: nn.Module, arch: str, meta: dict | None) -> Path:
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    return _save(path, {"arch": arch, "state_dict": state, "meta": meta or {}})


def load_backbone(path: Path, hint: str = "") -> nn.Module:
    """Read a backbone written by :func:`save_backbone` (ResNet-18 or ResNet-50, as the file says)."""
    payload, arch = _load(path, "backbone", hint)
    backbone = make_backbone(arch)
    _load_into(path, payload, backbone, f"a one-channel {arch}")
    return backbone


def save_classifier(path: Path, model: Classifier, meta: dict | None = None) -> Path:
    """Write a classifier (backbone and head), tagged ``<arch>-1ch-classifier``."""
    return _save_tagged(path, model, f"{backbone_arch(model.backbone)}-1ch-classifier", meta)


def load_classifier(path: Path, hint: str = "") -> tuple[Classifier, dict]:
    """Read a classifier written by :func:`save_classifier`; returns the model (eval mode) and its meta."""
    payload, arch = _load(path, "classifier", hint)
    model = Classifier(arch=arch)
    meta = _load_into(path, payload, model, f"the {arch} classifier")
    return model.eval(), meta


@torch.no_grad()
def predict(model: Classifier, images: torch.Tensor, where: Placement | None = None,
            batch_size: int = 64, logits: bool = False) -> np.ndarray:
    """Probability of the positive class for (N, 1, S, S) images in [0, 1] (on the CPU).

    Args:
        model: the classifier (put in eval mode here).
        images: the images. where: device, precision and memory format (default: the CPU in fp32).
        batch_size: images per forward pass.
        logits: return the logits instead (float32 probabilities are exactly 1 above a logit of about 17, so a
            maximum over many crops would tie).
    """
    where = where or Placement("cpu", torch.device("cpu"), "32-true", False)
    model = prepare_model(model.eval(), where)
    out = []
    for i in range(0, len(images), batch_size):
        with where.autocast():
            z = model(prepare_input(images[i : i + batch_size].float(), where)).squeeze(1).float()
        out.append((z if logits else torch.sigmoid(z)).cpu())
    model.to("cpu", memory_format=torch.contiguous_format)
    return torch.cat(out).numpy() if out else np.zeros(0)
