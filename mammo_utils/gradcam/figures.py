"""Figures of stage 05: CAM overlays with the lesion outlined, the outcome grid, the localization plot.

Figures are drawn on :class:`matplotlib.figure.Figure` objects (the Agg canvas) without pyplot, so nothing
here changes the backend or the global state of a notebook that imports the package; charts take their style
from :func:`mammo_utils.plots.styled`, and every figure is written by :func:`mammo_utils.plots.save_figure`.
Points and maps are carried back to the original image by :mod:`mammo_utils.gradcam.cams` and the
:class:`~mammo_utils.prepare.preprocess.Transform`, the same tested code the scores use.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from mammo_utils.gradcam.cams import cam_peak, cam_to_original, peak_to_original
from mammo_utils.plots import init_color, save_figure, styled
from mammo_utils.prepare.preprocess import Transform

log = logging.getLogger(__name__)

CAM_CMAP, CAM_ALPHA = "jet", 0.4
LESION_COLOUR = "lime"
OUTCOMES = ("TP", "FP", "FN", "TN")


def _overlay(
    ax, image: np.ndarray, cam: np.ndarray | None, lesion: np.ndarray | None, extent=None, peak_xy=None,
    grid: np.ndarray | None = None,
) -> None:
    """Grey image, CAM in colour on top, lesion outline, and a cross where the map points (``peak_xy``; else,
    given the map on its feature ``grid``, the centre of its hottest cell, as the pointing game scores it; else
    the maximum of ``cam``)."""
    ax.imshow(image, cmap="gray", vmin=0, vmax=1, extent=extent, interpolation="nearest")
    if cam is not None:
        ax.imshow(cam, cmap=CAM_CMAP, alpha=CAM_ALPHA, vmin=0, vmax=1, extent=extent)
    if lesion is not None and np.any(lesion) and not np.all(lesion):
        kw = {"extent": extent, "origin": "upper"} if extent is not None else {}
        ax.contour(np.asarray(lesion, dtype=float), levels=[0.5], colors=LESION_COLOUR, linewidths=1.2, **kw)
    if peak_xy is None and cam is not None and extent is None:
        peak_xy = cam_peak(cam) if grid is None else cam_peak(grid, np.shape(image))
    if peak_xy is not None:
        ax.plot([peak_xy[0]], [peak_xy[1]], marker="+", color="white", markersize=10, markeredgewidth=2)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_overlays(
    arrays: np.ndarray,
    cams_by_method: dict[str, np.ndarray],
    lesions: list[np.ndarray | None],
    indices: list[int],
    image_ids: list[str],
    path: Path,
    title: str = "",
    max_rows: int = 8,
    grids_by_method: dict[str, np.ndarray] | None = None,
) -> Path:
    """One row per image: the input, then each method's CAM, with the lesion outlined in green (and, given the
    maps on their feature grid, a cross at the centre of the hottest cell)."""
    indices = list(indices)[:max_rows]
    methods = list(cams_by_method)
    rows, cols = max(1, len(indices)), 1 + len(methods)
    fig = Figure(figsize=(2.2 * cols, 2.2 * rows + 0.4), layout="compressed")
    axes = fig.subplots(rows, cols, squeeze=False)
    for r, i in enumerate(indices):
        _overlay(axes[r, 0], arrays[i], None, lesions[i])
        axes[r, 0].set_ylabel(image_ids[i], fontsize=8)
        for c, method in enumerate(methods, start=1):
            grid = None if grids_by_method is None else grids_by_method[method][i]
            _overlay(axes[r, c], arrays[i], cams_by_method[method][i], lesions[i], grid=grid)
            if r == 0:
                axes[r, c].set_title(method, fontsize=9)
    if not indices:
        axes[0, 0].text(0.5, 0.5, "no test image with a lesion", ha="center", va="center")
        for ax in axes.ravel():
            ax.set_axis_off()
    axes[0, 0].set_title("input + lesion", fontsize=9)
    fig.suptitle(f"{title}: CAMs (colour), lesion (green), where each map points (+)", fontsize=10)
    return save_figure(fig, path)


def outcome_groups(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                   per_outcome: int = 4) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Masks of the TP / FP / FN / TN images, and the ``per_outcome`` most confident of each (the grid's cells)."""
    prob = np.asarray(probabilities, dtype=np.float64)
    label = np.nan_to_num(np.asarray(labels, dtype=np.float64), nan=-1).astype(int)  # -1: unknown
    known = np.isfinite(prob)
    pred = prob >= threshold
    groups = {
        "TP": known & pred & (label == 1), "FP": known & pred & (label == 0),
        "FN": known & ~pred & (label == 1), "TN": known & ~pred & (label == 0),
    }
    picked = {}
    for name in OUTCOMES:
        idx = np.flatnonzero(groups[name])
        # The most confident mistakes and successes are the instructive ones.
        picked[name] = idx[np.argsort(-np.abs(prob[idx] - threshold), kind="stable")][:per_outcome]
    return groups, picked


def outcome_grid_indices(labels: np.ndarray, probabilities: np.ndarray, threshold: float,
                         per_outcome: int = 4) -> list[int]:
    """The images the outcome grid shows."""
    _, picked = outcome_groups(labels, probabilities, threshold, per_outcome)
    return sorted(int(i) for idx in picked.values() for i in idx)


def plot_outcome_grid(
    arrays: np.ndarray,
    cams: np.ndarray,
    lesions: list[np.ndarray | None],
    labels: np.ndarray,
    probabilities: np.ndarray,
    threshold: float,
    image_ids: list[str],
    path: Path,
    title: str = "",
    per_outcome: int = 4,
    grids: np.ndarray | None = None,
) -> Path:
    """Rows of true positives, false positives, false negatives and true negatives (highest confidence first).

    Only the images :func:`outcome_grid_indices` picks are drawn, so only their ``cams`` need to be computed."""
    prob = np.asarray(probabilities, dtype=np.float64)
    groups, picked = outcome_groups(labels, prob, threshold, per_outcome)
    fig = Figure(figsize=(2.2 * per_outcome, 2.3 * len(OUTCOMES) + 0.4), layout="compressed")
    axes = fig.subplots(len(OUTCOMES), per_outcome, squeeze=False)
    for r, name in enumerate(OUTCOMES):
        idx = picked[name]
        for c in range(per_outcome):
            ax = axes[r, c]
            if c < len(idx):
                i = int(idx[c])
                _overlay(ax, arrays[i], cams[i], lesions[i], grid=None if grids is None else grids[i])
                ax.set_title(f"{image_ids[i]}  p={prob[i]:.2f}", fontsize=7)
            elif c == 0:  # keep the axes so the row keeps its label
                ax.set_xticks([])
                ax.set_yticks([])
                ax.text(0.5, 0.5, f"no {name}", ha="center", va="center", transform=ax.transAxes)
            else:
                ax.set_axis_off()
            if c == 0:
                ax.set_ylabel(f"{name} (n={int(groups[name].sum())})", fontsize=9)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def plot_original_overlay(
    array: np.ndarray,
    cam: np.ndarray,
    lesion: np.ndarray | None,
    transform: Transform,
    path: Path,
    title: str = "",
    max_display_px: int = 1024,
    grid: np.ndarray | None = None,
) -> Path:
    """The same CAM on the network input and carried back onto the original image's pixel grid.

    The original image is not read again: the network input itself is carried back with the same
    :meth:`Transform.to_original_image`, together with the CAM and the lesion mask, so the three stay aligned
    exactly when the mapping is right. The crop box is drawn; the axes are in original pixels.
    """
    image_o = transform.to_original_image(array)
    cam_o = cam_to_original(cam, transform)
    lesion_o = transform.to_original_image(lesion.astype(np.float32), order="nearest") if lesion is not None else None
    step = max(1, int(np.ceil(max(image_o.shape) / max_display_px)))  # display only; coordinates stay original
    extent = (0, transform.orig_width, transform.orig_height, 0)
    fig = Figure(figsize=(9, 4.6))
    ax_in, ax_orig = fig.subplots(1, 2)
    _overlay(ax_in, array, cam, lesion, grid=grid)
    # The point the map points at on the input, carried back: it must land on the same place of the carried map.
    peak = peak_to_original(cam if grid is None else grid, transform)
    ax_in.set_title(f"network input ({array.shape[1]}×{array.shape[0]} px)", fontsize=9)
    _overlay(ax_orig, image_o[::step, ::step], cam_o[::step, ::step],
             None if lesion_o is None else lesion_o[::step, ::step] > 0.5, extent=extent, peak_xy=peak)
    ax_orig.add_patch(Rectangle((transform.crop_x0, transform.crop_y0), transform.crop_x1 - transform.crop_x0,
                                transform.crop_y1 - transform.crop_y0, fill=False, ec="yellow", ls="--", lw=1))
    flip = ", flipped back" if transform.flipped else ""
    ax_orig.set_title(f"original grid ({transform.orig_width}×{transform.orig_height} px{flip})", fontsize=9)
    ax_orig.set_xticks([0, transform.orig_width])
    ax_orig.set_yticks([0, transform.orig_height])
    fig.suptitle(f"{title}: CAM and lesion carried back through crop, flip and resize", fontsize=10)
    return save_figure(fig, path)


@styled
def plot_localization(result: dict, path: Path) -> Path:
    """Hit rate and energy inside per init and method, 95% CI bars, chance level as a dashed line."""
    inits = list(result.get("inits", {}))
    methods = list(result.get("methods", []))
    palette = [init_color(i) for i in inits]
    chance = result.get("chance_level", {}).get("estimate", float("nan"))
    fig = Figure(figsize=(9, 3.8))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, score, label in zip(axes, ("pointing_game", "energy_inside"),
                                ("pointing game (hit rate)", "energy inside the lesion"), strict=True):
        width = 0.8 / max(1, len(inits))
        for k, init in enumerate(inits):
            for m, method in enumerate(methods):
                s = result["inits"][init]["methods"][method][score]
                est, lo, hi = (np.nan if s.get(f) is None else s[f] for f in ("estimate", "ci_low", "ci_high"))
                x = m - 0.4 + width * (k + 0.5)
                ax.errorbar([x], [est], yerr=[[max(0.0, est - lo)], [max(0.0, hi - est)]], fmt="o",
                            color=palette[k], capsize=4, label=init if m == 0 else None)
        if chance is not None and np.isfinite(chance):
            ax.axhline(chance, color="grey", ls="--", lw=1, label="chance (lesion area fraction)")
        ax.set_xticks(range(len(methods)))
        ax.set_xticklabels(methods)
        ax.set_xlim(-0.6, len(methods) - 0.4)
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(label, fontsize=10)
    axes[0].set_ylabel("mean over test images with a lesion (95% CI)")
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        axes[1].legend(handles, labels, fontsize=8, loc="upper right")
    fig.suptitle(f"Localization against the annotations (n = {result.get('n_with_lesion', 0)} images)",
                 fontsize=10)
    return save_figure(fig, path)
