r"""The two views of a crop of a grey film: what SimCLR learns to recognise as one and the same.

SimCLR (Chen et al., ICML 2020) learns by making two random views of one image agree. Its ImageNet recipe
(lightly's ``SimCLRTransform``) relies on colour jitter and grey-scale conversion, which do nothing to a grey
film, and crops as small as 8% of the image. Here each view of a region of the breast is:

1. a **random resized crop** of the region (area ``scale`` of it, aspect ``ratio``, log-uniform, as torchvision's
   ``RandomResizedCrop``), resized to ``size_px``;
2. **flips and quarter turns** (the eight symmetries of the square): a crop of breast tissue has no up or left;
3. an **intensity** change, the grey analogue of colour jitter: gamma (detector response), contrast and
   brightness (exposure);
4. a **Gaussian blur** with probability ``blur_prob`` (SimCLR's), and a little **Gaussian noise** (the detector's
   electronic noise, independent of the signal).

torchvision's transforms draw one set of parameters per call, so a batch would share them; a view per image in a
loader costs 0.7 ms (``benchmarks/simclr_throughput.py``). :func:`views` draws every parameter per image and applies
the whole batch at once (one ``affine_grid``/``grid_sample`` for steps 1-2, broadcast arithmetic for 3, a grouped
separable convolution for 4): 17x cheaper on a CPU, and on the device where the network runs. lightly's
``NTXentLoss`` then treats ``views(x)`` and a second ``views(x)`` of the same regions as positives.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from mammo_utils.sections import ViewsConfig


def _uniform(n: int, low: float, high: float, generator: torch.Generator | None) -> torch.Tensor:
    """n draws from U(low, high) on the CPU (parameters are tiny; they move to the images' device after)."""
    return torch.rand(n, generator=generator) * (high - low) + low


def crop_affine(n: int, cfg: ViewsConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """(n, 2, 3) affine matrices (``affine_grid``'s convention: output to input, coordinates in [-1, 1]) of n random
    resized crops, each flipped and turned by one of the square's eight symmetries as ``cfg`` allows."""
    area = _uniform(n, *cfg.scale, generator)
    ratio = torch.exp(_uniform(n, math.log(cfg.ratio[0]), math.log(cfg.ratio[1]), generator))
    w, h = torch.sqrt(area * ratio).clamp(max=1.0), torch.sqrt(area / ratio).clamp(max=1.0)  # fractions of the side
    cx, cy = _uniform(n, -1, 1, generator) * (1 - w), _uniform(n, -1, 1, generator) * (1 - h)  # inside the region
    sx = torch.where(_uniform(n, 0, 1, generator) < cfg.hflip_prob, -1.0, 1.0)
    sy = torch.where(_uniform(n, 0, 1, generator) < cfg.vflip_prob, -1.0, 1.0)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1], theta[:, 0, 2], theta[:, 1, 2] = w * sx, h * sy, cx, cy
    turn = _uniform(n, 0, 1, generator) < cfg.rot90_prob  # a transpose; with the flips, any quarter turn
    theta[:, :, :2] = torch.where(turn[:, None, None], theta[:, :, :2].flip(-1), theta[:, :, :2])
    return theta


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor, kernel_px: int = 7) -> torch.Tensor:
    """Blur each image of (B, 1, H, W) ``x`` with its own ``sigma`` (B,) where ``apply`` (B,) is True."""
    r = torch.arange(kernel_px, device=x.device, dtype=x.dtype) - kernel_px // 2
    kernel = torch.exp(-(r[None] ** 2) / (2 * sigma[:, None].to(x.dtype) ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)
    identity = (r == 0).to(x.dtype)[None].expand_as(kernel)
    kernel = torch.where(apply[:, None], kernel, identity)
    b, pad = x.shape[0], kernel_px // 2
    y = x.transpose(0, 1)  # (1, B, H, W): one group per image
    y = F.conv2d(F.pad(y, (pad, pad, 0, 0), mode="reflect"), kernel[:, None, None, :], groups=b)
    y = F.conv2d(F.pad(y, (0, 0, pad, pad), mode="reflect"), kernel[:, None, :, None], groups=b)
    return y.transpose(0, 1)


def intensity(x: torch.Tensor, cfg: ViewsConfig, generator: torch.Generator | None = None) -> torch.Tensor:
    """Random gamma, contrast (about each image's mean) and brightness, per image of (B, 1, H, W) ``x`` in [0, 1]."""
    b = x.shape[0]
    gamma = torch.exp(_uniform(b, math.log(cfg.gamma[0]), math.log(cfg.gamma[1]), generator))
    contrast = 1 + _uniform(b, -cfg.contrast, cfg.contrast, generator)
    brightness = _uniform(b, -cfg.brightness, cfg.brightness, generator)
    gamma, contrast, brightness = (v.to(x.device, x.dtype)[:, None, None, None] for v in (gamma, contrast, brightness))
    x = x.clamp(0, 1) ** gamma
    mean = x.mean(dim=(2, 3), keepdim=True)
    return ((x - mean) * contrast + mean + brightness).clamp(0, 1)


def views(regions: torch.Tensor, size_px: int, cfg: ViewsConfig,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """One random view of each region: (B, 1, R, R) in [0, 1] to (B, 1, size_px, size_px) in [0, 1].

    Call it twice on the same regions for SimCLR's two views. ``generator`` (a CPU generator) makes the views
    reproducible, wherever the regions are.
    """
    return view_steps(regions, size_px, cfg, generator)[-1][1]


def view_steps(regions: torch.Tensor, size_px: int, cfg: ViewsConfig,
               generator: torch.Generator | None = None) -> list[tuple[str, torch.Tensor]]:
    """:func:`views` step by step: ``[(name, images after that step), ...]``, from the regions to the view."""
    steps = [("region", regions)]
    b = regions.shape[0]
    theta = crop_affine(b, cfg, generator).to(regions.device, regions.dtype)
    grid = F.affine_grid(theta, [b, 1, size_px, size_px], align_corners=False)
    x = F.grid_sample(regions, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    steps.append(("crop, flip, turn", x))
    x = intensity(x, cfg, generator)
    steps.append(("gamma, contrast, brightness", x))
    if cfg.blur_prob > 0:
        sigma = _uniform(b, *cfg.blur_sigma, generator).to(x.device)
        x = gaussian_blur(x, sigma, (_uniform(b, 0, 1, generator) < cfg.blur_prob).to(x.device))
        steps.append(("blur (some)", x))
    if cfg.noise_std > 0:
        x = x + torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * cfg.noise_std
    steps.append(("noise", x.clamp(0, 1)))
    return steps
