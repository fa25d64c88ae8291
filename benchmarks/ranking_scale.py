"""How the attribution ranking's cost grows with the pictures: seconds per picture at 4, 32 and 256 pictures, with
its default parameters, on the shipped shapes CNN (64 x 64, object masks) and on a variable-size text-orientation
classifier exported here (48 x 192, upright against upside-down text lines, the ink as the mask), trained for a
few seconds so that its scores move when pixels are removed.

Run: ``python -m benchmarks.ranking_scale [--pictures 4,32,256] [--models shapes,textlines]``. Target (issue 29):
seconds per picture at 256 at most half those at 4.
"""

from __future__ import annotations

import argparse
import io
import resource
import time
import warnings

import numpy as np
import torch
from torch import nn

from benchmarks.common import software_line
from benchmarks.ranking import shape_inputs, text_line_inputs
from viz_server.model.images import decode_image
from viz_server.model.pipeline import load_model
from viz_server.runner import run_technique
from viz_server_models import shipped_models

HEIGHT, WIDTH = 48, 192


class TextOrientation(nn.Module):
    """Upright (0) or upside down (180): three strided convolutions and a global average, any height and width."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Linear(64, 2)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def oriented_lines(count: int, seed: int) -> tuple[list[tuple[str, bytes]], list[bytes], np.ndarray]:
    """Rendered text lines, every other one turned upside down (with its mask); and their classes."""
    images, masks = text_line_inputs(count, HEIGHT, WIDTH, seed=seed)
    classes = np.arange(count) % 2
    turned = []
    for (name, data), mask, upside_down in zip(images, masks, classes):
        if upside_down:
            data, mask = (_turned(item) for item in (data, mask))
        turned.append((name, data, mask))
    return [(name, data) for name, data, _ in turned], [mask for _, _, mask in turned], classes


def _turned(data: bytes) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.open(io.BytesIO(data)).rotate(180).save(buffer, format="PNG")
    return buffer.getvalue()


def text_orientation_model() -> bytes:
    """The classifier trained on 512 rendered lines (about 10 s), exported with dynamic height and width."""
    torch.manual_seed(0)
    network = TextOrientation()
    images, _masks, classes = oriented_lines(512, seed=1)
    batch = torch.from_numpy(np.stack([decode_image(data) for _, data in images]).astype(np.float32) / 255).permute(0, 3, 1, 2)
    batch, targets = (batch - 0.5) / 0.5, torch.from_numpy(classes)
    optimizer = torch.optim.Adam(network.parameters(), lr=3e-3)
    for step in range(150):
        rows = torch.from_numpy(np.random.default_rng(step).choice(len(batch), 64, replace=False))
        loss = nn.functional.cross_entropy(network(batch[rows]), targets[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    buffer = io.BytesIO()
    axes = {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(network, (batch[:1],), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes=axes)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pictures", default="4,32,256")
    parser.add_argument("--models", default="shapes,textlines")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    print(software_line())
    print(f"torch threads: {torch.get_num_threads()}; the ranking with its default parameters, target top1, object masks\n")
    counts = [int(count) for count in args.pictures.split(",")]
    rows = []
    for case in args.models.split(","):
        if case == "shapes":
            model = load_model(shipped_models()["shapes_cnn"])
        else:
            model = load_model(
                text_orientation_model(),
                name="text_orientation_48x192",
                image_size=f"{HEIGHT},{WIDTH}",
                value_range="0,1",
                mean="0.5",
                std="0.5",
                labels="0,180",
            )
        per_picture = {}
        for count in counts:
            images, masks = shape_inputs(count) if case == "shapes" else oriented_lines(count, seed=2)[:2]
            started = time.perf_counter()
            result = run_technique("attribution_ranking", model, images, {"target": "top1"}, masks=masks)
            seconds = time.perf_counter() - started
            per_picture[count] = seconds / count
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            rows.append(
                f"| {model.name} | {count} | {seconds:.1f} | {per_picture[count]:.3f} | {per_picture[count] / per_picture[counts[0]]:.2f} | {peak:.0f} |"
            )
            print(rows[-1], flush=True)
            print(f"  recommended: {result.metrics['recommended']}", flush=True)
    print("\n| model | pictures | seconds | seconds per picture | per picture / at the fewest | process peak MB |\n|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
