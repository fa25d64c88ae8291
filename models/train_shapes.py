"""Train the shipped shapes CNN on the procedural shapes dataset and export it to ONNX.

Four classes (circle, square, triangle, cross); each shape usually wears its own texture, so the network may
rely on shape, texture or both - which the texture-vs-shape probe later measures against known ground truth.
Run: ``python -m viz_server_models.train_shapes`` (under a minute on 2 CPU cores); writes shapes_cnn.onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

try:
    from viz_server_models import shapes
    from viz_server_models.export import export_onnx
except ImportError:  # run as a plain script from models/
    import shapes
    from export import export_onnx

SEED = 0
OUTPUT = Path(__file__).with_name("shapes_cnn.onnx")
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
SPEC = {"task": "classification", "layout": "NCHW", "value_range": [0.0, 1.0], "mean": list(MEAN), "std": list(STD), "labels": list(shapes.CLASSES)}
"""The spec every shapes classifier is exported with (``export_onnx`` adds ``channel_order``)."""


class ShapesCNN(nn.Module):
    """Four conv-BN-ReLU blocks (the last at 8x8), global average pooling, one linear layer."""

    def __init__(self, classes: int = len(shapes.CLASSES)):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1),
            nn.BatchNorm2d(16),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )
        self.classifier = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def to_model_space(images: np.ndarray) -> torch.Tensor:
    unit = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    return (unit - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def predictions(model: nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([model(to_model_space(images[start : start + 256])).argmax(1).numpy() for start in range(0, len(images), 256)])


def accuracy(model: nn.Module, images: np.ndarray, labels: np.ndarray) -> float:
    return float((predictions(model, images) == labels).mean())


def train(
    seed: int = SEED,
    count: int = 3000,
    epochs: int = 10,
    cue: tuple[str, float] | None = None,
    network: type[nn.Module] = ShapesCNN,
    max_lr: float = 5e-3,
) -> tuple[nn.Module, dict]:
    """Train a ``network`` on ``count`` fresh pictures; with ``cue`` = (class, rate), that share of the class's
    pictures carries the planted cue (``shapes.plant_cue``) and no other picture does."""
    torch.manual_seed(seed)
    torch.set_num_threads(2)
    data = shapes.make_dataset(count, seed=seed)
    if cue is not None:
        shapes.plant_cue(data, shapes.CLASSES.index(cue[0]), cue[1], seed)
    test = shapes.make_dataset(800, seed=seed + 1)
    conflict = shapes.cue_conflict_set(per_pair=20, seed=seed + 2)
    model = network()
    optimizer = torch.optim.Adam(model.parameters(), lr=max_lr * 0.6)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=max_lr, total_steps=epochs * -(-count // 64))
    x, y = to_model_space(data.images), torch.from_numpy(data.shape_labels).long()
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(count, generator=generator)
        for start in range(0, count, 64):
            batch = order[start : start + 64]
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
            schedule.step()
    model.eval()
    with torch.no_grad():
        decisions = model(to_model_space(conflict.images)).argmax(1).numpy()
    shape_hits = int((decisions == conflict.shape_labels).sum())
    texture_hits = int((decisions == conflict.texture_labels).sum())
    figures = {
        "test_accuracy": accuracy(model, test.images, test.shape_labels),
        "shape_bias": shape_hits / max(shape_hits + texture_hits, 1),
    }
    return model, figures


def write_samples(folder: Path = Path(__file__).with_name("samples"), seed: int = 100) -> None:
    """One picture per class plus one cue-conflict picture, for demos and the web UI's image picker."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    for name in shapes.CLASSES:
        picture, _ = shapes.make_image(name, name, rng)
        Image.fromarray(picture).save(folder / f"{name}.png")
    picture, _ = shapes.make_image("circle", "square", rng)
    Image.fromarray(picture).save(folder / "circle-square.png")  # shape circle, texture of square


def main() -> None:
    write_samples()
    model, figures = train()
    export_onnx(
        model,
        torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
        OUTPUT,
        {
            **SPEC,
            "description": "Small CNN on procedurally generated textured shapes (viz_server_models.shapes).",
            "test_accuracy": f"{figures['test_accuracy']:.4f}",
            "shape_bias": f"{figures['shape_bias']:.4f}",
        },
    )
    print(f"shapes CNN: test accuracy {figures['test_accuracy']:.4f}, shape bias on cue conflicts {figures['shape_bias']:.3f} -> {OUTPUT}")


if __name__ == "__main__":
    main()
