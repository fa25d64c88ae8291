"""From a saliency or CAM map to an object mask and bounding box (weakly supervised localization), and the
scores that compare a map with a known object mask (pointing game: Zhang et al. 2016; energy inside the mask:
Wang et al. 2020, Score-CAM)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from viz_server.errors import UserError

THRESHOLD = 0.5
"""Fraction of the smoothed map's maximum above which a pixel belongs to the object."""


def mask_from_map(values: np.ndarray, threshold: float = THRESHOLD) -> np.ndarray:
    """Smooth, threshold at ``threshold`` x max, keep the connected component holding the peak."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float64))
    sigma = max(1.0, min(values.shape) / 32.0)
    smooth = ndimage.gaussian_filter(values, sigma)
    peak = smooth.max()
    if peak <= 0:
        return np.zeros(values.shape, bool)
    regions, _ = ndimage.label(smooth >= threshold * peak)
    return regions == regions[np.unravel_index(np.argmax(smooth), smooth.shape)]


def refine_with_grabcut(picture: np.ndarray, mask: np.ndarray, iterations: int = 4) -> np.ndarray:
    """Refine a map's mask with GrabCut (Rother et al. 2004), a colour-model segmentation, via OpenCV.

    The map's mask is probable foreground, the rest of its (enlarged) box probable background, and everything
    outside that box background.
    """
    try:
        import cv2
    except ImportError:
        raise UserError(
            "GrabCut refinement needs OpenCV: pip install 'viz-server[segmentation]' (opencv-python-headless), or use segmentation=threshold."
        ) from None
    box = bounding_box(mask)
    if box is None:
        return mask
    height, width = mask.shape
    top, left, bottom, right = box
    margin_y, margin_x = max(2, (bottom - top) // 4), max(2, (right - left) // 4)
    labels = np.full(mask.shape, cv2.GC_BGD, np.uint8)
    labels[max(0, top - margin_y) : bottom + margin_y + 1, max(0, left - margin_x) : right + margin_x + 1] = cv2.GC_PR_BGD
    labels[mask] = cv2.GC_PR_FGD
    if (labels == cv2.GC_BGD).sum() == 0 or (labels == cv2.GC_PR_FGD).sum() == labels.size:
        return mask  # nothing to contrast the object with
    background, foreground = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(picture[..., ::-1]), labels, None, background, foreground, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]  # rect is ignored with GC_INIT_WITH_MASK
    refined = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    return refined if refined.any() else mask


def bounding_box(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(top, left, bottom, right), inclusive, of the mask; None when it is empty."""
    rows, cols = np.nonzero(mask)
    if rows.size == 0:
        return None
    return int(rows.min()), int(cols.min()), int(rows.max()), int(cols.max())


def draw_box(picture: np.ndarray, box: tuple[int, int, int, int] | None, colour=(0, 255, 255)) -> np.ndarray:
    picture = picture.copy()
    if box is None:
        return picture
    top, left, bottom, right = box
    picture[top, left : right + 1] = colour
    picture[bottom, left : right + 1] = colour
    picture[top : bottom + 1, left] = colour
    picture[top : bottom + 1, right] = colour
    return picture


def pointing_game(values: np.ndarray, object_mask: np.ndarray) -> bool:
    """Does the map's maximum fall on the object?"""
    return bool(object_mask[np.unravel_index(np.argmax(values), values.shape)])


def energy_in_mask(values: np.ndarray, object_mask: np.ndarray) -> float:
    """Share of the map's (non-negative) mass that lies on the object."""
    values = np.clip(np.nan_to_num(values), 0, None)
    total = values.sum()
    return float(values[object_mask].sum() / total) if total > 0 else 0.0
