"""Model-free maps: what an attribution must beat to say anything about the model.

An explanation method earns trust only if it does better than maps that never look at the model (Adebayo et
al. 2018 found that several methods are indistinguishable from an edge detector):

- ``random``: uniform noise, seeded (any metric that cannot beat it measures nothing);
- ``centre``: a centred Gaussian (objects tend to sit in the middle of a photo);
- ``edges``: the Sobel gradient magnitude of the image itself, the largest over its channels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

BASELINES = {
    "random": "random map (uniform noise)",
    "centre": "centre Gaussian",
    "edges": "edges of the image (Sobel, no model)",
}


def baseline_maps(name: str, unit: np.ndarray, seed: int = 0) -> np.ndarray:
    """N x H x W maps of baseline ``name`` for N x H x W x C images in [0, 1]."""
    count, height, width = unit.shape[:3]
    if name == "random":
        return np.random.default_rng(seed).random((count, height, width)).astype(np.float32)
    if name == "centre":
        y, x = np.mgrid[0:height, 0:width]
        gaussian = np.exp(-(((y - (height - 1) / 2) / (height / 4)) ** 2 + ((x - (width - 1) / 2) / (width / 4)) ** 2) / 2)
        return np.repeat(gaussian[None].astype(np.float32), count, axis=0)
    if name == "edges":
        maps = np.zeros((count, height, width), np.float32)
        for index, picture in enumerate(np.asarray(unit, np.float64)):
            for channel in np.moveaxis(picture, -1, 0):  # 2-D filters only: never smooth across images or channels
                maps[index] = np.maximum(maps[index], np.hypot(ndimage.sobel(channel, axis=0), ndimage.sobel(channel, axis=1)))
        return maps
    raise KeyError(name)
