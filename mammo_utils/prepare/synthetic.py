"""A deterministic generator of mammogram-like images with lesion masks.

Not a simulation of X-ray physics: a picture that reads as a mammogram at a glance, with a known truth,
so every stage can be run, tested and taught without downloading anything. Each image has a breast outline
with a skin line, fibroglandular texture (power-law noise, denser for density C/D), a pectoral muscle on MLO
views, a side marker outside the breast, and for abnormal breasts one lesion:

- ``circumscribed`` mass: round, smooth edge (benign-like);
- ``spiculated`` mass: irregular core with radiating spicules (malignant-like);
- ``calcification`` cluster: small bright specks, benign (round, sparse) or malignant (pleomorphic, dense).

Each synthetic woman has four images (L/R x CC/MLO); a lesion appears on both views of one breast.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

LESION_TYPES = ("circumscribed", "spiculated", "calcification")
DENSITIES = ("A", "B", "C", "D")


@dataclass
class SyntheticLesion:
    """One lesion: its kind, severity (B or M), centre and radius (pixels, top-left origin) and mask."""

    lesion_type: str
    severity: str
    cx: float
    cy: float
    r: float
    mask: np.ndarray  # bool (H, W)

    @property
    def kind(self) -> str:
        return "calcification" if self.lesion_type == "calcification" else "mass"


@dataclass
class SyntheticImage:
    pixels: np.ndarray  # float32 (H, W) in [0, 1]
    breast: np.ndarray  # bool (H, W)
    laterality: str
    view: str
    density: str
    lesions: list[SyntheticLesion] = field(default_factory=list)

    @property
    def abnormal(self) -> int:
        return int(bool(self.lesions))

    @property
    def malignant(self) -> int:
        return int(any(les.severity == "M" for les in self.lesions))


def power_law_noise(rng: np.random.Generator, size: int, beta: float = 3.0) -> np.ndarray:
    """Gaussian noise with a 1/f^beta power spectrum, scaled to zero mean and unit variance.

    Mammographic parenchyma has a power-law spectrum with beta near 3 (Burgess et al., Med. Phys. 2001).
    """
    fy = np.fft.fftfreq(size)[:, None]
    fx = np.fft.rfftfreq(size)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    amplitude = f ** (-beta / 2)
    amplitude[0, 0] = 0.0
    phase = rng.normal(size=(size, size // 2 + 1)) + 1j * rng.normal(size=(size, size // 2 + 1))
    field_ = np.fft.irfft2(amplitude * phase, s=(size, size))
    return ((field_ - field_.mean()) / (field_.std() + 1e-8)).astype(np.float32)


def _breast_shape(rng: np.random.Generator, size: int, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Breast mask and normalised depth (1 at the chest wall, 0 at the skin) for a left-facing breast."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    cy = rng.uniform(0.45, 0.55) if view == "CC" else rng.uniform(0.5, 0.6)
    a = rng.uniform(0.55, 0.8)  # depth of the breast from the chest wall
    b = rng.uniform(0.36, 0.46)  # half height
    theta = np.arctan2(yy - cy, xx + 1e-3)
    wobble = 1 + 0.04 * np.sin(3 * theta + rng.uniform(0, 6.3)) + 0.02 * np.sin(7 * theta + rng.uniform(0, 6.3))
    rho = np.sqrt((xx / a) ** 2 + ((yy - cy) / b) ** 2) / wobble
    mask = rho < 1.0
    depth = np.clip(1.0 - rho, 0.0, 1.0)
    return mask, depth


def _pectoral(rng: np.random.Generator, size: int) -> np.ndarray:
    """Triangle-like pectoral muscle in the upper corner at the chest wall (MLO views)."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32) / size
    x0, y0 = rng.uniform(0.18, 0.32), rng.uniform(0.45, 0.7)
    bow = rng.uniform(-0.05, 0.05)
    edge = x0 * (1 - yy / y0) + bow * np.sin(np.pi * np.clip(yy / y0, 0, 1))
    return (xx < edge) & (yy < y0)


def _place(rng: np.random.Generator, breast: np.ndarray, r: float) -> tuple[float, float]:
    """A centre at least ``r`` plus a margin inside the breast, so the whole lesion lies in the breast."""
    inside = ndimage.distance_transform_edt(breast)
    ys, xs = np.nonzero(inside > r * 1.6 + 3)
    if len(ys) == 0:
        ys, xs = np.nonzero(inside >= inside.max())
    i = rng.integers(len(ys))
    return float(xs[i]), float(ys[i])


def _lesion(rng: np.random.Generator, size: int, breast: np.ndarray, lesion_type: str) -> tuple[SyntheticLesion, np.ndarray]:
    """A lesion and its additive intensity image."""
    yy, xx = np.mgrid[:size, :size].astype(np.float32)
    if lesion_type == "calcification":
        r = size * rng.uniform(0.03, 0.05)
        cx, cy = _place(rng, breast, r)
        severity = "M" if rng.random() < 0.5 else "B"
        n = int(rng.integers(12, 22)) if severity == "M" else int(rng.integers(5, 9))
        spread = 0.6 if severity == "M" else 1.0
        add = np.zeros((size, size), np.float32)
        speck = max(0.8, size / 220)
        for _ in range(n):
            px, py = cx + rng.normal(0, r * spread / 2), cy + rng.normal(0, r * spread / 2)
            if severity == "M":  # pleomorphic: elongated, irregular specks
                ang = rng.uniform(0, np.pi)
                u = (xx - px) * np.cos(ang) + (yy - py) * np.sin(ang)
                v = -(xx - px) * np.sin(ang) + (yy - py) * np.cos(ang)
                d2 = (u / (speck * rng.uniform(1.5, 3))) ** 2 + (v / speck) ** 2
            else:
                d2 = ((xx - px) ** 2 + (yy - py) ** 2) / (speck * rng.uniform(1.2, 1.8)) ** 2
            add += np.exp(-d2).astype(np.float32) * rng.uniform(0.6, 0.9)
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r**2
        return SyntheticLesion(lesion_type, severity, cx, cy, r, mask & breast), np.minimum(add, 0.8)

    r = size * rng.uniform(0.04, 0.07)
    cx, cy = _place(rng, breast, r * (2.2 if lesion_type == "spiculated" else 1.0))
    ang = np.arctan2(yy - cy, xx - cx)
    dist = np.sqrt((xx - cx) ** 2 + (yy - cy) ** 2)
    if lesion_type == "circumscribed":
        radius = r * (1 + 0.05 * np.sin(2 * ang + rng.uniform(0, 6.3)))
        body = 1 / (1 + np.exp(np.clip((dist - radius) / (0.08 * r), -50, 50)))  # smooth, well-defined margin
        add = 0.3 * body * rng.uniform(0.8, 1.1)
        mask = dist <= radius * 1.05
        severity = "B"
    else:
        radius = r * 0.7 * (1 + 0.25 * np.sin(5 * ang + rng.uniform(0, 6.3)) * np.cos(3 * ang))
        body = 1 / (1 + np.exp(np.clip((dist - radius) / (0.15 * r), -50, 50)))
        spicules = np.zeros_like(dist)
        for a0 in rng.uniform(-np.pi, np.pi, size=int(rng.integers(10, 18))):
            length = r * rng.uniform(1.5, 2.6)
            along = (xx - cx) * np.cos(a0) + (yy - cy) * np.sin(a0)
            across = -(xx - cx) * np.sin(a0) + (yy - cy) * np.cos(a0)
            width = max(0.6, size / 400) * (1 - np.clip(along / length, 0, 1)) + 0.3
            spicules = np.maximum(spicules, np.exp(-(across / width) ** 2) * ((along > 0) & (along < length)))
        add = 0.3 * rng.uniform(0.8, 1.1) * np.maximum(body, 0.6 * spicules)
        mask = (body > 0.5) | (spicules > 0.5)
        severity = "M"
    return SyntheticLesion(lesion_type, severity, cx, cy, float(r), mask & breast), add.astype(np.float32)


def generate_image(
    rng: np.random.Generator,
    size_px: int = 256,
    view: str = "CC",
    laterality: str = "L",
    density: str = "B",
    lesion_type: str | None = None,
) -> SyntheticImage:
    """One synthetic mammogram.

    Args:
        rng: the random generator (the image is a pure function of its state).
        size_px: side of the square image.
        view: ``CC`` or ``MLO`` (MLO adds a pectoral muscle).
        laterality: ``L`` (chest wall on the left of the image, as in a left-facing display) or ``R``.
        density: BI-RADS density ``A``–``D``: the amount of fibroglandular tissue.
        lesion_type: one of :data:`LESION_TYPES`, or ``None`` for a normal image.
    """
    size = int(size_px)
    breast, depth = _breast_shape(rng, size, view)
    # Thickness falls towards the skin; tissue is brighter where the breast is thicker.
    base = 0.25 + 0.3 * np.sqrt(depth)
    level = {"A": 0.15, "B": 0.35, "C": 0.6, "D": 0.85}[density]
    texture = ndimage.gaussian_filter(power_law_noise(rng, size, beta=3.0), 1.0)
    gland_zone = np.clip(depth * 1.6, 0, 1) ** 0.7
    glands = np.clip(texture + (level - 0.5) * 2.0, 0, None) * 0.18 * gland_zone
    image = (base + glands) * breast
    skin = breast & ~ndimage.binary_erosion(breast, iterations=max(1, size // 128))
    image = np.where(skin, image + 0.12, image)
    if view == "MLO":
        pec = _pectoral(rng, size) & breast
        image = np.where(pec, 0.75 + 0.05 * texture, image)
    lesions = []
    if lesion_type is not None:
        lesion, add = _lesion(rng, size, breast & ~(_pectoral(rng, size) if view == "MLO" else False), lesion_type)
        image = image + add * breast
        lesions.append(lesion)
    # A lead side marker outside the breast, as on real films; preprocessing must remove it.
    m = max(3, size // 24)
    image[size - 3 * m : size - m, size - 3 * m : size - 2 * m] = 0.95
    image = ndimage.gaussian_filter(image, 0.5) + rng.normal(0, 0.012, size=image.shape)
    image = np.clip(image, 0, 1).astype(np.float32)
    if laterality == "R":  # a right breast is displayed mirrored: chest wall on the right
        image = image[:, ::-1].copy()
        breast = breast[:, ::-1].copy()
        for les in lesions:
            les.mask = les.mask[:, ::-1].copy()
            les.cx = size - 1 - les.cx
    return SyntheticImage(image, breast, laterality, view, density, lesions)


@dataclass
class SyntheticPatient:
    patient_id: str
    density: str
    lesion_laterality: str | None
    lesion_type: str | None
    images: list[tuple[str, SyntheticImage]]  # (image_id, image)


def generate_patient(seed: int, index: int, size_px: int, abnormal_fraction: float = 0.5) -> SyntheticPatient:
    """One synthetic woman with four images; a pure function of ``(seed, index)``."""
    rng = np.random.default_rng([seed, index])
    density = str(rng.choice(DENSITIES, p=[0.15, 0.4, 0.35, 0.1]))
    lesion_type = str(rng.choice(LESION_TYPES, p=[0.35, 0.35, 0.3])) if rng.random() < abnormal_fraction else None
    lesion_side = str(rng.choice(["L", "R"])) if lesion_type else None
    patient_id = f"S{index:04d}"
    images = []
    for laterality in ("L", "R"):
        for view in ("CC", "MLO"):
            image_rng = np.random.default_rng([seed, index, ord(laterality), ord(view[0])])
            lt = lesion_type if laterality == lesion_side else None
            # Both views of the breast show the same lesion type; severity of calcifications is per breast.
            img = generate_image(image_rng, size_px, view, laterality, density, lt)
            images.append((f"{patient_id}_{laterality}_{view}", img))
    if lesion_type == "calcification":  # one cluster, one severity, seen in both views
        severity = "M" if rng.random() < 0.5 else "B"
        for _, img in images:
            for les in img.lesions:
                les.severity = severity
    return SyntheticPatient(patient_id, density, lesion_side, lesion_type, images)
