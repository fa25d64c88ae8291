"""The attribution method ranking on known material, as Markdown tables for the model cards and the README.

Run: ``python -m benchmarks.ranking shapes [--images 24]`` (the shipped shapes CNN, fresh generated pictures
with their object masks), ``python -m benchmarks.ranking digits`` (the shipped linear digits model, no masks),
or ``python -m benchmarks.ranking textlines --model PATH.onnx --image-size 48,192`` (a variable-width text
model, e.g. PaddleOCR's text-direction classifier, on rendered upright text lines whose ink is the mask).
The ranking runs through the runner with its default parameters, exactly as the CLI and the web run it.
"""

from __future__ import annotations

import argparse
import io
import time

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from viz_server.model.pipeline import load_model
from viz_server.runner import run_technique
from viz_server_models import shapes, shipped_models

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly judge boxing matches at dawn".split()


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def shape_inputs(count: int):
    data = shapes.make_dataset(count, seed=2024, congruent_fraction=1.0)
    images = [(f"{shapes.CLASSES[label]}-{index}.png", png(picture)) for index, (picture, label) in enumerate(zip(data.images, data.shape_labels))]
    return images, [png((mask * 255).astype(np.uint8)) for mask in data.masks]


def digit_inputs(count: int):
    from sklearn.datasets import load_digits

    digits = load_digits()
    pictures = (digits.images[-count:] * (255 / 16)).astype(np.uint8)
    return [(f"digit-{label}-{index}.png", png(picture)) for index, (picture, label) in enumerate(zip(pictures, digits.target[-count:]))], None


def text_line_inputs(count: int, height: int, width: int, seed: int = 0):
    """Black upright text on light paper; the mask is the ink."""
    rng = np.random.default_rng(seed)
    font = ImageFont.truetype("DejaVuSans.ttf", int(height * 0.55))
    images, masks = [], []
    for index in range(count):
        text = " ".join(rng.choice(WORDS, size=3))
        ink = Image.new("L", (width, height), 0)
        ImageDraw.Draw(ink).text((int(rng.integers(2, 12)), int(height * 0.18)), text, fill=255, font=font)
        paper = rng.uniform(200, 250) + rng.normal(0, 6, (height, width))
        picture = np.where(np.asarray(ink)[..., None] > 127, rng.uniform(0, 60), paper[..., None].repeat(3, 2))
        images.append((f"line-{index}.png", png(np.clip(picture, 0, 255).astype(np.uint8))))
        masks.append(png(((np.asarray(ink) > 127) * 255).astype(np.uint8)))
    return images, masks


def markdown(result) -> str:
    table = next(artifact for artifact in result.artifacts if artifact.kind == "table").rows
    lines = ["| " + " | ".join(map(str, table[0])) + " |", "|" + "---|" * len(table[0])]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in table[1:]]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=("shapes", "digits", "textlines"))
    parser.add_argument("--images", type=int, default=24)
    parser.add_argument("--model", help="ONNX file (textlines)")
    parser.add_argument("--image-size", default="48,192", help="H,W for textlines")
    args = parser.parse_args()
    if args.case == "shapes":
        model = load_model(shipped_models()["shapes_cnn"])
        images, masks = shape_inputs(args.images)
    elif args.case == "digits":
        model = load_model(shipped_models()["digits_linear"])
        images, masks = digit_inputs(args.images)
    else:
        height, width = (int(side) for side in args.image_size.split(","))
        model = load_model(args.model, image_size=args.image_size, value_range="0,1", mean="0.5", std="0.5", channel_order="BGR")
        images, masks = text_line_inputs(args.images, height, width)
    started = time.perf_counter()
    result = run_technique("attribution_ranking", model, images, {"target": "top1"}, masks=masks)
    seconds = time.perf_counter() - started
    print(f"{model.name}: {len(images)} images, target top1, {'with' if masks else 'without'} object masks; {seconds:.0f} s\n")
    print(markdown(result))
    print()
    for sentence in result.metrics["verdict"]:
        print(f"- {sentence}")


if __name__ == "__main__":
    main()
