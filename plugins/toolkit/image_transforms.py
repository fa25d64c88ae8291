"""Image transformations in unit space (N x H x W x C in [0, 1]), shared by the corruption benchmark and the
defence probes. Severities follow ImageNet-C (Hendrycks & Dietterich 2019), blur scaled to the image size."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image
from scipy import ndimage

SEVERITIES = {
    "gaussian_noise": (0.08, 0.12, 0.18, 0.26, 0.38),  # noise std
    "gaussian_blur": (1, 2, 3, 4, 6),  # sigma in pixels at 224 px, scaled to the image
    "contrast": (0.4, 0.3, 0.2, 0.1, 0.05),  # remaining contrast
    "brightness": (0.1, 0.2, 0.3, 0.4, 0.5),  # added brightness
    "jpeg": (25, 18, 15, 10, 7),  # JPEG quality
}


def gaussian_noise(images: np.ndarray, std: float, rng: np.random.Generator) -> np.ndarray:
    return np.clip(images + rng.normal(0.0, std, images.shape), 0, 1).astype(np.float32)


def gaussian_blur(images: np.ndarray, sigma_at_224: float) -> np.ndarray:
    sigma = sigma_at_224 * images.shape[1] / 224
    return np.stack([ndimage.gaussian_filter(image, sigma=(sigma, sigma, 0)) for image in images]).astype(np.float32)


def contrast(images: np.ndarray, factor: float) -> np.ndarray:
    means = images.mean(axis=(1, 2, 3), keepdims=True)
    return np.clip((images - means) * factor + means, 0, 1).astype(np.float32)


def brightness(images: np.ndarray, amount: float) -> np.ndarray:
    return np.clip(images + amount, 0, 1).astype(np.float32)


def jpeg(images: np.ndarray, quality: int) -> np.ndarray:
    """Re-encode as JPEG at ``quality`` (grey or RGB), back to unit space."""
    out = []
    for image in images:
        pixels = (image * 255 + 0.5).astype(np.uint8)
        picture = Image.fromarray(pixels[..., 0] if pixels.shape[2] == 1 else pixels[..., :3])
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=int(quality))
        decoded = np.asarray(Image.open(buffer), dtype=np.float32) / 255.0
        decoded = decoded[..., None] if decoded.ndim == 2 else decoded
        if pixels.shape[2] == 4:
            decoded = np.concatenate([decoded, image[..., 3:]], axis=2)
        out.append(decoded)
    return np.stack(out).astype(np.float32)


def median_smoothing(images: np.ndarray, size: int) -> np.ndarray:
    return np.stack([ndimage.median_filter(image, size=(size, size, 1)) for image in images]).astype(np.float32)


def corrupt(images: np.ndarray, kind: str, severity: int, rng: np.random.Generator) -> np.ndarray:
    value = SEVERITIES[kind][severity - 1]
    if kind == "gaussian_noise":
        return gaussian_noise(images, value, rng)
    if kind == "gaussian_blur":
        return gaussian_blur(images, value)
    if kind == "contrast":
        return contrast(images, value)
    if kind == "brightness":
        return brightness(images, value)
    return jpeg(images, int(value))
