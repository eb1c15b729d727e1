"""From a raw mammogram to the network's square input: breast mask, crop, orientation, resize and pad.

Every step is recorded in a :class:`Transform`, so that lesion annotations follow the image and a CAM
computed on the network input can be carried back to the original image's pixels.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

PREPROCESS_VERSION = 2  # bump when the pixels this module writes change; part of the cache key


@dataclass(frozen=True)
class Transform:
    """Where the output pixels come from in the original image.

    Coordinates are continuous, in pixels: pixel ``i`` covers ``[i, i + 1)``; the centre of pixel
    ``(col, row)`` is ``(col + 0.5, row + 0.5)``. The crop box is ``[crop_x0, crop_x1) x [crop_y0, crop_y1)``
    of the original; after cropping the image is mirrored left-right when ``flipped`` (so the chest wall is
    on the left), scaled by ``scale`` and padded on the right and bottom to ``out_size`` square.
    """

    orig_width: int
    orig_height: int
    crop_x0: int
    crop_y0: int
    crop_x1: int
    crop_y1: int
    flipped: bool
    scale: float
    out_size: int

    @property
    def out_width(self) -> int:
        return max(1, round((self.crop_x1 - self.crop_x0) * self.scale))

    @property
    def out_height(self) -> int:
        return max(1, round((self.crop_y1 - self.crop_y0) * self.scale))

    def to_output(self, xy: np.ndarray) -> np.ndarray:
        """Map pixel-index points ``(N, 2)`` (x = column, y = row) of the original to the output."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5
        x = xy[:, 0] - self.crop_x0
        y = xy[:, 1] - self.crop_y0
        if self.flipped:
            x = (self.crop_x1 - self.crop_x0) - x
        return np.stack([x * self.scale, y * self.scale], axis=1) - 0.5

    def to_original(self, xy: np.ndarray) -> np.ndarray:
        """Inverse of :meth:`to_output`."""
        xy = (np.asarray(xy, dtype=np.float64).reshape(-1, 2) + 0.5) / self.scale
        x, y = xy[:, 0], xy[:, 1]
        if self.flipped:
            x = (self.crop_x1 - self.crop_x0) - x
        return np.stack([x + self.crop_x0, y + self.crop_y0], axis=1) - 0.5

    def length_to_output(self, length_px: float) -> float:
        return float(length_px) * self.scale

    def apply(self, image: np.ndarray, order: str = "bilinear") -> np.ndarray:
        """Apply the crop, flip, resize and pad to an image or mask of the original's shape."""
        crop = image[self.crop_y0 : self.crop_y1, self.crop_x0 : self.crop_x1]
        if self.flipped:
            crop = crop[:, ::-1]
        small = _resize(crop.astype(np.float32), (self.out_height, self.out_width), order)
        out = np.zeros((self.out_size, self.out_size), dtype=np.float32)
        out[: small.shape[0], : small.shape[1]] = small[: self.out_size, : self.out_size]
        return out

    def to_original_image(self, array: np.ndarray, order: str = "bilinear") -> np.ndarray:
        """Carry a map on the output grid (e.g. a CAM) back onto the original image's pixel grid."""
        content = array[: self.out_height, : self.out_width].astype(np.float32)
        crop = _resize(content, (self.crop_y1 - self.crop_y0, self.crop_x1 - self.crop_x0), order)
        if self.flipped:
            crop = crop[:, ::-1]
        out = np.zeros((self.orig_height, self.orig_width), dtype=np.float32)
        out[self.crop_y0 : self.crop_y1, self.crop_x0 : self.crop_x1] = crop
        return out

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Transform:
        return cls(
            orig_width=int(d["orig_width"]), orig_height=int(d["orig_height"]),
            crop_x0=int(d["crop_x0"]), crop_y0=int(d["crop_y0"]),
            crop_x1=int(d["crop_x1"]), crop_y1=int(d["crop_y1"]),
            flipped=str(d["flipped"]).lower() in ("1", "true"), scale=float(d["scale"]),
            out_size=int(d["out_size"]),
        )


def _resize(image: np.ndarray, shape: tuple[int, int], order: str = "bilinear") -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None]
    if order == "nearest":
        out = F.interpolate(t, size=shape, mode="nearest")
    else:  # antialias so downscaling a 4,000-px film does not alias calcifications away
        out = F.interpolate(t, size=shape, mode="bilinear", align_corners=False, antialias=True)
    return out[0, 0].numpy()


def _otsu(values: np.ndarray) -> float:
    hist, edges = np.histogram(values, bins=256, range=(0.0, 1.0))
    centres = (edges[:-1] + edges[1:]) / 2
    w0 = np.cumsum(hist)
    w1 = w0[-1] - w0
    m0 = np.cumsum(hist * centres)
    mu0 = m0 / np.maximum(w0, 1)
    mu1 = (m0[-1] - m0) / np.maximum(w1, 1)
    between = w0 * w1 * (mu0 - mu1) ** 2
    return float(centres[int(np.argmax(between))])


def breast_mask(pixels: np.ndarray, max_side_px: int = 512) -> np.ndarray:
    """Boolean mask of the breast: the largest bright connected region, holes filled.

    Labels, markers and film-edge artefacts that are not connected to the breast fall outside the mask.
    The mask is computed on a copy downsampled to at most ``max_side_px`` and brought back to full size.
    """
    h, w = pixels.shape
    step = max(1, int(np.ceil(max(h, w) / max_side_px)))
    small = pixels[::step, ::step]
    smooth = ndimage.gaussian_filter(small, 1.0)
    # Half of Otsu's threshold keeps the thin, dark skin-line region of fatty breasts in the mask.
    threshold = float(np.clip(0.5 * _otsu(smooth), 0.03, 0.25))
    fg = ndimage.binary_opening(smooth > threshold, iterations=2)
    labels, n = ndimage.label(fg)
    if n == 0:
        return np.ones_like(pixels, dtype=bool)
    sizes = ndimage.sum(fg, labels, index=np.arange(1, n + 1))
    mask_small = ndimage.binary_fill_holes(labels == (1 + int(np.argmax(sizes))))
    if step == 1:
        return mask_small
    rows = np.minimum(np.arange(h) // step, mask_small.shape[0] - 1)
    cols = np.minimum(np.arange(w) // step, mask_small.shape[1] - 1)
    return mask_small[np.ix_(rows, cols)]


def chest_wall_on_right(mask: np.ndarray) -> bool:
    """Whether the chest wall is on the right of the image, so that the image must be mirrored.

    The film cuts the breast at the chest wall, so the breast touches that side of its bounding box along a
    long stretch of rows, while the skin line on the nipple side curves in and touches its side at one point.
    So the side whose outermost columns (2% of the width) the breast covers more is the chest wall. (The side
    holding more breast tissue, an earlier rule, picked the wrong side on 47 of MIAS's 322 films: tall MLO
    views whose two halves hold about as much tissue; this rule on 4, films that fill the whole frame.)
    """
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        return False
    box = np.asarray(mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1], dtype=bool)
    k = max(1, box.shape[1] // 50)
    return bool(box[:, -k:].mean() > box[:, :k].mean())


def plan_transform(pixels: np.ndarray, mask: np.ndarray, size_px: int, margin_px: int = 2) -> Transform:
    """Decide crop box, flip and scale from the image and its breast mask."""
    h, w = pixels.shape
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        y0, y1, x0, x1 = 0, h, 0, w
    else:
        y0, y1 = max(0, rows[0] - margin_px), min(h, rows[-1] + 1 + margin_px)
        x0, x1 = max(0, cols[0] - margin_px), min(w, cols[-1] + 1 + margin_px)
    flipped = chest_wall_on_right(mask)
    scale = size_px / max(y1 - y0, x1 - x0)
    return Transform(w, h, int(x0), int(y0), int(x1), int(y1), flipped, float(scale), int(size_px))


def preprocess_image(pixels: np.ndarray, size_px: int) -> tuple[np.ndarray, Transform]:
    """Mask, crop, orient and resize one image.

    Args:
        pixels: float image in [0, 1], bright = dense, shape (H, W).
        size_px: side of the square output.

    Returns:
        The (size_px, size_px) float32 image, zero outside the breast, and the :class:`Transform` used.
    """
    mask = breast_mask(pixels)
    transform = plan_transform(pixels, mask, size_px)
    out = transform.apply(np.where(mask, pixels, 0.0))
    return np.clip(out, 0.0, 1.0), transform


def lesion_mask(
    lesions: list[dict], width: int, height: int, mask_reader=None
) -> np.ndarray:
    """Union of the lesions of one image as a boolean mask on the original grid.

    ``shape`` circle uses ``cx, cy, r``; box uses ``x0, y0, x1, y1``; mask reads ``mask_path`` with
    ``mask_reader(path) -> array``. Lesions with shape ``none`` contribute nothing.
    """
    out = np.zeros((height, width), dtype=bool)
    yy, xx = np.ogrid[:height, :width]
    for les in lesions:
        shape = les.get("shape")
        if shape == "circle":
            out |= (xx - float(les["cx"])) ** 2 + (yy - float(les["cy"])) ** 2 <= float(les["r"]) ** 2
        elif shape == "box":
            x0, y0 = int(max(0, les["x0"])), int(max(0, les["y0"]))
            out[y0 : int(les["y1"]) + 1, x0 : int(les["x1"]) + 1] = True
        elif shape == "mask" and mask_reader is not None and les.get("mask_path"):
            m = np.asarray(mask_reader(les["mask_path"])) > 0.5
            if m.shape == out.shape:
                out |= m
    return out
