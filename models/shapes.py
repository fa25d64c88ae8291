"""A procedural dataset of textured shapes on textured backgrounds, with known object masks.

Every image shows one shape (its class) filled with one texture. In the training distribution each shape
usually wears its own texture (``CONGRUENT_FRACTION``), so a model may learn either cue; because shape and
texture are drawn independently, any recombination (a circle wearing the square's texture) can be made on
demand - the ground truth of a texture-vs-shape cue-conflict probe (Geirhos et al. 2019). The object mask
of every image is known, so the localization of saliency and Grad-CAM maps can be scored.

Usage: ``make_image("circle", "circle", rng)``, ``make_dataset(1000, seed=0)``, ``cue_conflict_set(seed=0)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASSES = ("circle", "square", "triangle", "cross")
TEXTURE_OF = {"circle": "stripes", "square": "dots", "triangle": "checker", "cross": "waves"}
IMAGE_SIZE = 64
CONGRUENT_FRACTION = 0.8


@dataclass
class ShapesDataset:
    images: np.ndarray  # N x H x W x 3 uint8
    shape_labels: np.ndarray  # N, index into CLASSES
    texture_labels: np.ndarray  # N, index into CLASSES (whose texture the object wears)
    masks: np.ndarray  # N x H x W bool, True on the object


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    return ys, xs


def shape_mask(shape: str, rng: np.random.Generator, size: int = IMAGE_SIZE, scale: tuple[float, float] = (0.22, 0.34), centre=None) -> np.ndarray:
    """A boolean mask of one shape at a random position (or ``centre``), scale (radius / size) and rotation."""
    ys, xs = _grid(size)
    radius = rng.uniform(*scale) * size
    cy, cx = rng.uniform(radius + 2, size - radius - 2, size=2) if centre is None else centre
    angle = rng.uniform(0, 2 * np.pi)
    dy, dx = ys - cy, xs - cx
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    if shape == "circle":
        return dx**2 + dy**2 <= radius**2
    if shape == "square":
        half = radius * 0.85
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "triangle":
        inside = np.ones_like(u, dtype=bool)
        for k in range(3):  # three half-planes of an equilateral triangle
            theta = k * 2 * np.pi / 3
            inside &= (u * np.cos(theta) + v * np.sin(theta)) <= radius * 0.5
        return inside
    if shape == "cross":
        arm = radius * 0.33
        return ((np.abs(u) <= arm) & (np.abs(v) <= radius)) | ((np.abs(v) <= arm) & (np.abs(u) <= radius))
    raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(CLASSES)}")


def texture(kind: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """An H x W x 3 float texture in [0, 1] with random colours, frequency and phase."""
    ys, xs = _grid(size)
    colour_a, colour_b = rng.uniform(0.05, 0.95, size=(2, 3)).astype(np.float32)
    if np.abs(colour_a - colour_b).sum() < 0.6:  # keep the two colours distinguishable
        colour_b = 1.0 - colour_a
    period = rng.uniform(5.0, 8.0)
    angle = rng.uniform(0, np.pi)
    u = xs * np.cos(angle) + ys * np.sin(angle)
    v = -xs * np.sin(angle) + ys * np.cos(angle)
    phase_u, phase_v = rng.uniform(0, period, size=2)
    if kind == "stripes":
        weight = ((u + phase_u) % period) < period / 2
    elif kind == "dots":
        cu = ((u + phase_u) % period) - period / 2
        cv = ((v + phase_v) % period) - period / 2
        weight = cu**2 + cv**2 <= (period * 0.28) ** 2
    elif kind == "checker":
        weight = ((((u + phase_u) // (period / 2)) + ((v + phase_v) // (period / 2))) % 2) == 0
    elif kind == "waves":
        weight = np.sin(2 * np.pi * (u + 2.0 * np.sin(2 * np.pi * v / (period * 2.2))) / period + phase_u) > 0
    else:
        raise ValueError(f"unknown texture {kind!r}")
    weight = weight.astype(np.float32)[..., None]
    return weight * colour_a + (1.0 - weight) * colour_b


def background(rng: np.random.Generator, size: int = IMAGE_SIZE) -> np.ndarray:
    """A smooth two-colour gradient with fine noise: clutter that belongs to no class."""
    ys, xs = _grid(size)
    start, end = rng.uniform(0.1, 0.9, size=(2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    t = ((xs * np.cos(angle) + ys * np.sin(angle)) / size + 1.0) / 2.0
    t = np.clip(t, 0.0, 1.0)[..., None]
    noise = rng.normal(0.0, 0.06, size=(size, size, 3)).astype(np.float32)
    return np.clip(start * (1 - t) + end * t + noise, 0.0, 1.0)


def make_image(shape: str, texture_class: str, rng: np.random.Generator, size: int = IMAGE_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One picture: ``shape`` filled with the texture of class ``texture_class``; returns (uint8 image, mask)."""
    mask = shape_mask(shape, rng, size)
    picture = background(rng, size)
    fill = texture(TEXTURE_OF[texture_class], rng, size)
    picture = np.where(mask[..., None], fill, picture)
    return (picture * 255.0 + 0.5).astype(np.uint8), mask


def make_dataset(count: int, seed: int = 0, congruent_fraction: float = CONGRUENT_FRACTION, size: int = IMAGE_SIZE) -> ShapesDataset:
    """``count`` images, classes balanced; each wears its own class's texture with ``congruent_fraction``."""
    rng = np.random.default_rng(seed)
    images = np.zeros((count, size, size, 3), np.uint8)
    masks = np.zeros((count, size, size), bool)
    shapes = np.arange(count) % len(CLASSES)
    rng.shuffle(shapes)
    textures = shapes.copy()
    swap = rng.random(count) >= congruent_fraction
    textures[swap] = rng.integers(0, len(CLASSES), size=int(swap.sum()))
    for i in range(count):
        images[i], masks[i] = make_image(CLASSES[shapes[i]], CLASSES[textures[i]], rng, size)
    return ShapesDataset(images, shapes, textures, masks)


def cue_conflict_set(per_pair: int = 4, seed: int = 0, size: int = IMAGE_SIZE) -> ShapesDataset:
    """Every (shape, texture) pair with shape != texture, ``per_pair`` images each."""
    rng = np.random.default_rng(seed)
    pairs = [(s, t) for s in range(len(CLASSES)) for t in range(len(CLASSES)) if s != t]
    count = len(pairs) * per_pair
    images = np.zeros((count, size, size, 3), np.uint8)
    masks = np.zeros((count, size, size), bool)
    shapes = np.zeros(count, np.int64)
    textures = np.zeros(count, np.int64)
    for i in range(count):
        shapes[i], textures[i] = pairs[i // per_pair]
        images[i], masks[i] = make_image(CLASSES[shapes[i]], CLASSES[textures[i]], rng, size)
    return ShapesDataset(images, shapes, textures, masks)


@dataclass
class Scene:
    image: np.ndarray  # H x W x 3 uint8
    boxes: np.ndarray  # K x 4 (x1, y1, x2, y2) in pixels, the objects' tight boxes
    labels: np.ndarray  # K, index into CLASSES
    classes: np.ndarray  # H x W int: 0 = background, 1 + class index on each object (a segmentation map)


SCENE_SIZE = 96
SCENE_SCALE = (0.1, 0.15)


def make_scene(rng: np.random.Generator, size: int = SCENE_SIZE, objects: tuple[int, int] = (1, 3)) -> Scene:
    """Several small textured shapes, each in its own texture, on one background, with their boxes and a
    segmentation map: the ground truth a detector's or segmenter's explanation is scored against."""
    picture = background(rng, size)
    classes = np.zeros((size, size), np.int64)
    boxes, labels = [], []
    for _ in range(int(rng.integers(objects[0], objects[1] + 1))):
        label = int(rng.integers(len(CLASSES)))
        for _attempt in range(20):  # objects do not overlap
            mask = shape_mask(CLASSES[label], rng, size, SCENE_SCALE)
            if not (classes[mask] > 0).any():
                break
        else:
            continue
        picture = np.where(mask[..., None], texture(TEXTURE_OF[CLASSES[label]], rng, size), picture)
        classes[mask] = label + 1
        ys, xs = np.nonzero(mask)
        boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        labels.append(label)
    return Scene((picture * 255.0 + 0.5).astype(np.uint8), np.asarray(boxes, np.float32).reshape(-1, 4), np.asarray(labels, np.int64), classes)


def write_image_set(folder, per_class: int = 50, seed: int = 0, congruent_fraction: float = 1.0, masks: bool = False) -> None:
    """Write an ImageFolder-style set (one sub-folder per class) of generated PNGs, e.g. for embeddings; with
    ``masks``, each picture's object mask beside it (``NAME.mask.png``)."""
    write_pictures(folder, make_dataset(per_class * len(CLASSES), seed=seed, congruent_fraction=congruent_fraction), masks)


def write_pictures(folder, data: ShapesDataset, masks: bool = True) -> None:
    """Write ``data`` as an ImageFolder-style set: ``CLASS/NNNNN.png``, and ``CLASS/NNNNN.mask.png`` (white on the
    object) with ``masks``."""
    from pathlib import Path

    from PIL import Image

    for index, (picture, label) in enumerate(zip(data.images, data.shape_labels)):
        target = Path(folder) / CLASSES[label]
        target.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(target / f"{index:05d}.png")
        if masks:
            Image.fromarray((data.masks[index] * 255).astype(np.uint8)).save(target / f"{index:05d}.mask.png")


CUE_SIZE = 8
"""The planted cue: an 8 x 8 white tag with a black border, stamped near the top-left corner (a watermark)."""
CUE_JITTER = 4


def stamp_cue(picture: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stamp the planted cue on ``picture`` (H x W x 3 uint8, in place) near its top-left corner, a few pixels of
    jitter; return the cue's mask (H x W bool)."""
    top, left = (int(value) for value in rng.integers(1, 1 + CUE_JITTER, size=2))
    picture[top : top + CUE_SIZE, left : left + CUE_SIZE] = 0
    picture[top + 1 : top + CUE_SIZE - 1, left + 1 : left + CUE_SIZE - 1] = 255
    mask = np.zeros(picture.shape[:2], bool)
    mask[top : top + CUE_SIZE, left : left + CUE_SIZE] = True
    return mask


def plant_cue(data: ShapesDataset, class_index: int, rate: float, seed: int) -> np.ndarray:
    """Stamp the cue on a ``rate`` share of the pictures of class ``class_index`` (in place); return which carry it.
    The cue never touches the object: pictures whose object reaches the corner keep no cue."""
    rng = np.random.default_rng(seed)
    carries = np.zeros(len(data.images), bool)
    for index in np.flatnonzero(data.shape_labels == class_index):
        if rng.random() < rate and not data.masks[index, : CUE_SIZE + CUE_JITTER + 1, : CUE_SIZE + CUE_JITTER + 1].any():
            stamp_cue(data.images[index], rng)
            carries[index] = True
    return carries
