"""Train the shipped linear classifier on scikit-learn's bundled 8x8 digits and export it to ONNX.

A single fully connected layer reads the image, so its weights reshape into one 8x8 template per digit.
Run: ``python -m viz_server_models.train_digits`` (about 5 s on 2 CPU cores); writes digits_linear.onnx.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

try:
    from viz_server_models.export import export_onnx
except ImportError:  # run as a plain script from models/
    from export import export_onnx

SEED = 0
OUTPUT = Path(__file__).with_name("digits_linear.onnx")


def train(seed: int = SEED) -> tuple[nn.Module, float]:
    torch.manual_seed(seed)
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # N x 1 x 8 x 8, ink = 1
    x_train, x_test, y_train, y_test = train_test_split(images, digits.target, test_size=0.25, random_state=seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=1e-3)
    x_train, y_train = torch.from_numpy(x_train), torch.from_numpy(y_train).long()
    for _ in range(300):
        optimizer.zero_grad()
        loss = nn.functional.cross_entropy(model(x_train), y_train)
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        accuracy = (model(torch.from_numpy(x_test)).argmax(1).numpy() == y_test).mean()
    return model, float(accuracy)


def write_sample(folder: Path = Path(__file__).with_name("samples")) -> None:
    """One digit from the bundled set as a PNG (white ink on black, as the model expects)."""
    from PIL import Image

    folder.mkdir(exist_ok=True)
    Image.fromarray((load_digits().images[3] / 16 * 255).astype(np.uint8)).save(folder / "digit-3.png")


def main() -> None:
    write_sample()
    model, accuracy = train()
    export_onnx(
        model,
        torch.zeros(1, 1, 8, 8),
        OUTPUT,
        {
            "task": "classification",
            "layout": "NCHW",
            "value_range": [0.0, 1.0],
            "mean": [0.0],
            "std": [1.0],
            "labels": [str(i) for i in range(10)],
            "description": "Linear classifier on scikit-learn's 8x8 digits (white ink on black, values 0-1).",
            "test_accuracy": f"{accuracy:.4f}",
        },
    )
    print(f"digits linear classifier: test accuracy {accuracy:.4f} -> {OUTPUT}")


if __name__ == "__main__":
    main()
