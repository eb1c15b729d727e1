"""One-channel ResNet-50 backbone, classifier head, and checkpoints that load safely.

One-channel input (DESIGN.md): the first convolution takes one channel. With ImageNet weights its three
RGB kernels are summed into one, which is exactly what repeating the grey channel three times would compute,
at a third of the cost of the first layer.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn as nn
import torchvision

from .errors import CheckpointError, MammoError
from .paths import atomic_write_bytes

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


def _inplace_is_slow(t: torch.Tensor) -> bool:
    return t.dtype == torch.bfloat16 and t.device.type == "cpu"


class _ReLUBf16(torch.autograd.Function):
    """ReLU of a bf16 tensor as an integer clamp of its bit pattern, forward and backward.

    A bf16 number with its sign bit set is a negative int16, so ``max(bits, 0)`` is ReLU (-0.0 becomes +0.0,
    and so does a NaN with its sign bit set). PyTorch's bf16 kernels widen every element to fp32 and back;
    the int16 ones do not (per call on layer1 of ResNet-50 at 224 px: forward 1.7-2.6x, backward 1.6x faster;
    ``benchmarks/inplace_bf16.py``). The backward passes the gradient where the output's bits are positive,
    which is where the output is above zero.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        out = x.view(torch.int16).clamp_min(0).view(torch.bfloat16)
        ctx.save_for_backward(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        (out,) = ctx.saved_tensors
        if grad.dtype != torch.bfloat16:
            return torch.ops.aten.threshold_backward(grad, out, 0)
        bits = torch.ops.aten.threshold_backward(grad.view(torch.int16), out.view(torch.int16), 0)
        return bits.view(torch.bfloat16)


class _Fork(torch.autograd.Function):
    """Two aliases of one tensor whose gradients are summed out of place.

    Autograd sums the gradients of a tensor used twice (a block's input feeds its first convolution and the
    shortcut) with an in-place add, which on bf16 CPU tensors is ~2x slower than an out-of-place one.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.view_as(x), x.view_as(x)

    @staticmethod
    def backward(ctx, grad_a: torch.Tensor, grad_b: torch.Tensor) -> torch.Tensor:
        return grad_a + grad_b


class ReLU(nn.ReLU):
    """``nn.ReLU(inplace=True)``, except on bf16 CPU tensors, where an out-of-place integer kernel is faster.

    In-place element-wise kernels on bf16 CPU tensors run 2.0-2.5x slower than out-of-place ones (PyTorch
    2.14; ``benchmarks/inplace_bf16.py`` measures it), and under bf16 autocast every activation is bf16. On
    fp32 the in-place kernel is the faster one, so it is kept there (and on GPUs, as torchvision does).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _ReLUBf16.apply(x) if _inplace_is_slow(x) else torch.relu_(x)


class Bottleneck(torchvision.models.resnet.Bottleneck):
    """torchvision's ResNet-50 block; on bf16 CPU tensors the residual add and the gradient sum at its input
    run out of place (see :class:`ReLU` and :class:`_Fork`).

    Same parameters, same outputs and gradients; state dicts are interchangeable with
    ``torchvision.models.resnet50``.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.relu = ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        slow_inplace = _inplace_is_slow(x)
        identity = x
        if slow_inplace and x.requires_grad and torch.is_grad_enabled():
            x, identity = _Fork.apply(x)
        if self.downsample is not None:
            identity = self.downsample(identity)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + identity if slow_inplace else out.add_(identity)
        return self.relu(out)


def resnet50_backbone(init: str = "random") -> nn.Module:
    """A torchvision ResNet-50 with a one-channel first convolution and no classification layer.

    Args:
        init: ``random`` or ``imagenet`` (weights read from the local torch cache only; never downloaded).

    Returns:
        A module mapping (B, 1, H, W) to (B, 2048) features. ``layer4[-1]`` is the Grad-CAM target layer.
    """
    # torchvision.models.resnet50(weights=None), built with the block above.
    net = torchvision.models.resnet.ResNet(Bottleneck, [3, 4, 6, 3])
    net.relu = ReLU()
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
