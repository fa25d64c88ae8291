"""Integrated Gradients, occlusion and RISE against Captum, as ratios from one run (median of ``--repeats``
timings after a warm-up), on torchvision networks with random weights at ``--size``² and batch ``--batch``.

- Integrated Gradients: ours on the converted graph against ``captum.attr.IntegratedGradients`` on the native
  module (same steps, Gauss-Legendre, same points per backward pass).
- Occlusion: ours on onnxruntime against ``captum.attr.Occlusion`` on the native module (same patch, stride and
  altered copies per forward pass); also images per second.
- RISE: ours on onnxruntime (Captum has none): images per second.
- With ``--transformers`` (timm's ViT-Ti/16, random weights, 224²): attention rollout (ours on onnxruntime) and
  transformer attribution (ours on the converted graph) against the same computation on the native timm module
  with forward hooks on its attention (as vit-explain and Chefer et al.'s code do; Captum has neither).

Run: ``python -m benchmarks.forward_methods [--models resnet18,mobilenet_v2] [--size 224] [--batch 2] [--repeats 3]
[--transformers]``.
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server.techniques import validate_params
from viz_server.testing import objective_for
from viz_server_plugins.integrated_gradients import IntegratedGradients
from viz_server_plugins.occlusion import Occlusion
from viz_server_plugins.rise import Rise

STEPS, WINDOW, STRIDE, MASKS, PER_PASS = 32, 0.125, 0.5, 500, 32


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--transformers", action="store_true", help="the attention methods on timm's ViT-Ti/16 instead")
    args = parser.parse_args()
    if args.transformers:
        return transformers(args)
    from captum.attr import IntegratedGradients as CaptumIntegratedGradients
    from captum.attr import Occlusion as CaptumOcclusion

    warnings.filterwarnings("ignore")
    print(software_line("captum"))
    print()
    print("| network | method | ours (s) | Captum (s) | ours / Captum | ours, images/s |")
    print("|---|---|---|---|---|---|")
    for name in args.models.split(","):
        torch.manual_seed(0)
        native = getattr(torchvision.models, name)(weights=None).eval()
        model = load_model(export_native(native, args.size), name=name)
        images = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
        with torch.no_grad():
            targets = native(images).argmax(1)
        side = round(WINDOW * args.size)
        step = round(side * STRIDE)

        ig = validate_params(IntegratedGradients.params, {"steps": STEPS, "baseline": "zero", "internal_batch": PER_PASS})
        ours = median_seconds(lambda: IntegratedGradients().attribute(model, images, objective_for(model, classes=targets), ig), args.repeats)
        theirs = median_seconds(
            lambda: CaptumIntegratedGradients(native).attribute(
                images, baselines=torch.zeros_like(images), target=targets, n_steps=STEPS, internal_batch_size=PER_PASS
            ),
            args.repeats,
        )
        print(f"| {name} | Integrated Gradients ({STEPS} steps) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | {args.batch / ours:.2f} |", flush=True)

        occlusion = validate_params(Occlusion.params, {"window": WINDOW, "stride": STRIDE, "baseline": "zero", "batch": PER_PASS})
        ours = median_seconds(lambda: Occlusion().attribute(model, images, objective_for(model, classes=targets), occlusion), args.repeats)
        theirs = median_seconds(
            lambda: CaptumOcclusion(native).attribute(
                images, sliding_window_shapes=(3, side, side), strides=(3, step, step), baselines=0, target=targets, perturbations_per_eval=PER_PASS
            ),
            args.repeats,
        )
        print(
            f"| {name} | Occlusion ({side} px patch, stride {step}) | {ours:.2f} | {theirs:.2f} | {ours / theirs:.2f} | {args.batch / ours:.2f} |", flush=True
        )

        rise = validate_params(Rise.params, {"masks": MASKS, "batch": PER_PASS})
        ours = median_seconds(lambda: Rise().attribute(model, images, objective_for(model, classes=targets), rise), args.repeats)
        print(f"| {name} | RISE ({MASKS} masks) | {ours:.2f} | — | — | {args.batch / ours:.2f} |", flush=True)


def native_attention(native, images: torch.Tensor, targets: torch.Tensor | None) -> tuple[list, list | None]:
    """Each block's attention probabilities on the native timm module (and their gradients for ``targets``)."""
    captured: list[torch.Tensor] = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda _m, _i, output: captured.append(output)) for block in native.blocks]
    try:
        with torch.set_grad_enabled(targets is not None):
            scores = native(images)
            if targets is None:
                return captured, None
            return captured, list(torch.autograd.grad(scores[torch.arange(len(images)), targets].sum(), captured))
    finally:
        for handle in handles:
            handle.remove()


def native_rollout(native, images: torch.Tensor) -> torch.Tensor:
    weights, _ = native_attention(native, images, None)
    tokens = weights[0].shape[-1]
    flow = torch.eye(tokens).repeat(len(images), 1, 1)
    for values in weights:
        mixed = 0.5 * values.mean(1) + 0.5 * torch.eye(tokens)
        flow = (mixed / mixed.sum(-1, keepdim=True)) @ flow
    return upsampled(flow[:, 0, 1:])


def upsampled(rows: torch.Tensor) -> torch.Tensor:
    """The patch row on its 14 x 14 grid, bilinearly upsampled to the input's 224 x 224 (as ours returns it)."""
    return torch.nn.functional.interpolate(rows.reshape(len(rows), 1, 14, 14), size=(224, 224), mode="bilinear", align_corners=False)


def native_chefer(native, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    weights, gradients = native_attention(native, images, targets)
    assert gradients is not None
    tokens = weights[0].shape[-1]
    relevance = torch.eye(tokens).repeat(len(images), 1, 1)
    for values, gradient in zip(weights, gradients):
        relevance = relevance + (gradient * values).clamp(min=0).mean(1) @ relevance
    return upsampled(relevance[:, 0, 1:])


def transformers(args) -> None:
    import timm

    from viz_server_plugins.attention_rollout import AttentionRollout
    from viz_server_plugins.transformer_attribution import TransformerAttribution

    warnings.filterwarnings("ignore")
    print(software_line("timm"))
    print()
    print("| network | method | ours (s) | native module with hooks (s) | ours / native | ours, images/s |")
    print("|---|---|---|---|---|---|")
    torch.manual_seed(0)
    native = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    for block in native.blocks:
        block.attn.fused_attn = False  # attention written out, so the native module's can be hooked and exported
    model = load_model(export_native(native, 224), name="vit_tiny")
    images = torch.rand(args.batch, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        targets = native(images).argmax(1)
    rows = [
        ("Attention rollout", AttentionRollout(), lambda: native_rollout(native, images)),
        ("Transformer attribution", TransformerAttribution(), lambda: native_chefer(native, images, targets)),
    ]
    for label, technique, reference in rows:
        ours = median_seconds(lambda technique=technique: technique.attribute(model, images, objective_for(model, classes=targets), {}), args.repeats)
        theirs = median_seconds(reference, args.repeats)
        print(f"| vit_tiny_patch16_224 | {label} | {ours:.3f} | {theirs:.3f} | {ours / theirs:.2f} | {args.batch / ours:.1f} |", flush=True)


if __name__ == "__main__":
    main()
