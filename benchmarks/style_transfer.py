"""Style transfer, 100 L-BFGS steps at 256²: our technique on the converted graph against a plain reference loop
(content + Gram losses, L-BFGS, the PyTorch tutorial's recipe) on the same features of the native module.

The network is torchvision's VGG-11 feature stack (random weights; Gatys et al. used VGG) under a small head,
exported to ONNX. Style layers: the first four ReLUs; content layer: the fourth. The reference runs the native
``features[:k]`` cut after the deepest of them, as a hand-written loop would.

Run: ``python -m benchmarks.style_transfer [--steps 100] [--size 256] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from torch import nn

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server.rendering import png_bytes
from viz_server.runner import run_technique
from viz_server_models import shapes
from viz_server_plugins.style_transfer import gram

STYLE_RELUS, CONTENT_RELU = (0, 1, 2, 3), 3


def network() -> nn.Module:
    import torchvision

    features = torchvision.models.vgg11(weights=None).features
    return nn.Sequential(features, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, 10)).eval()


def reference_loop(
    features: nn.Sequential, relu_indices: list[int], content: torch.Tensor, style: torch.Tensor, steps: int, style_weight: float, content_weight: float
) -> torch.Tensor:
    """The plain loop: features cut after the deepest layer, Gram-matrix style loss, L-BFGS one evaluation per step."""
    cut = features[: relu_indices[max(STYLE_RELUS + (CONTENT_RELU,))] + 1]

    def extract(image):
        outputs, x = {}, image
        for index, module in enumerate(cut):
            x = module(x)
            outputs[index] = x
        return outputs

    with torch.no_grad():
        style_grams = {i: gram(extract(style)[relu_indices[i]]) for i in STYLE_RELUS}
        content_target = extract(content)[relu_indices[CONTENT_RELU]]
    image = content.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=1)

    def closure():
        optimizer.zero_grad()
        outputs = extract(image)
        style_term = sum(((gram(outputs[relu_indices[i]]) - style_grams[i]) ** 2).sum() for i in STYLE_RELUS)
        content_term = ((outputs[relu_indices[CONTENT_RELU]] - content_target) ** 2).mean()
        loss = style_weight * style_term + content_weight * content_term
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
        with torch.no_grad():
            image.clamp_(0, 1)
    return image.detach()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    native = network()
    for parameter in native.parameters():
        parameter.requires_grad_(False)
    model = load_model(export_native(native, args.size), use_cache=False)
    relu_layers = [layer.name for layer in model.layers if layer.op == "Relu"]
    relu_indices = [index for index, module in enumerate(native[0]) if isinstance(module, nn.ReLU)]
    pictures = shapes.make_dataset(2, seed=3, size=args.size).images
    content, style = (torch.from_numpy(picture).permute(2, 0, 1)[None].float().contiguous() / 255.0 for picture in pictures)
    params = {
        "style_layers": ",".join(relu_layers[i] for i in STYLE_RELUS),
        "content_layer": relu_layers[CONTENT_RELU],
        "steps": args.steps,
        "optimizer": "lbfgs",
        "tv_weight": 0.0,
        "style_weight": 1e4,
        "content_weight": 1.0,
    }
    files = [(f"picture{index}.png", png_bytes(picture)) for index, picture in enumerate(pictures)]
    ours = median_seconds(lambda: run_technique("style_transfer", model, files[:1], params, second_image=files[1]), args.repeats)
    reference = median_seconds(lambda: reference_loop(native[0], relu_indices, content, style, args.steps, 1e4, 1.0), args.repeats)
    print(software_line())
    print(f"VGG-11 features, {args.steps} L-BFGS steps at {args.size}x{args.size}, median of {args.repeats}\n")
    print("| ours (whole technique run) s | reference loop s | ratio |\n|---|---|---|")
    print(f"| {ours:.2f} | {reference:.2f} | {ours / reference:.2f} |")


if __name__ == "__main__":
    main()
