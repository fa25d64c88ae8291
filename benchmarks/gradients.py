"""Side-by-side speed of gradient work, as ratios from one run (median of ``--repeats`` timings after a warm-up).

Three tables, all at batch ``--batch`` and ``--size``²:

1. the converted graph's forward+backward against the same network as a native torchvision module;
2. our saliency, guided backprop, Grad-CAM and Guided Grad-CAM (converted graph) against Captum and
   pytorch-grad-cam on the native module;
3. technique overhead: a whole ``run_technique`` (decode PNGs, preprocess, attribute, masks, render every
   picture; the optional sanity and faithfulness checks off) against one bare forward+backward of the
   converted graph.

Run: ``python -m benchmarks.gradients [--models resnet18,mobilenet_v2] [--batch 16] [--size 224] [--repeats 5]``
(install the ``bench`` extra first).
"""

from __future__ import annotations

import argparse
import warnings

import torch
import torchvision

from benchmarks.common import export_native, median_seconds, software_line
from viz_server.model.pipeline import load_model
from viz_server.runner import run_technique
from viz_server.testing import objective_for

DEFAULT_MODELS = "resnet18,mobilenet_v2,mobilenet_v3_large,densenet121,efficientnet_b0,convnext_tiny"
CHECKS_OFF = {"sanity_check": False, "faithfulness": False}


def native_cam_layer(name: str, native: torch.nn.Module) -> torch.nn.Module:
    """The layer Captum and pytorch-grad-cam are pointed at: the last block of the feature extractor."""
    return native.layer4[-1] if name.startswith("resnet") else native.features[-1]


def forward_backward(module, batch):
    def work():
        inputs = batch.clone().requires_grad_(True)
        module(inputs)[:, 0].sum().backward()

    return work


def shape_pictures(count: int, size: int, seed: int = 0) -> list[tuple[str, bytes]]:
    """``count`` generated pictures (a textured shape on a textured background) as PNG files."""
    from viz_server.rendering import png_bytes
    from viz_server_models import shapes

    dataset = shapes.make_dataset(count, seed=seed, size=size)
    return [(f"shape{index}.png", png_bytes(picture)) for index, picture in enumerate(dataset.images)]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=DEFAULT_MODELS)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from captum.attr import GuidedBackprop, GuidedGradCam, LayerAttribution, LayerGradCam, Saliency
    from pytorch_grad_cam import GradCAM as LibraryGradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from viz_server_plugins.gradcam import GradCAM
    from viz_server_plugins.guided_backprop import GuidedBackprop as OurGuidedBackprop
    from viz_server_plugins.guided_gradcam import GuidedGradCAM
    from viz_server_plugins.saliency import Saliency as OurSaliency

    print(software_line("captum", "grad-cam"))
    print(f"batch {args.batch} at {args.size}x{args.size}, median of {args.repeats}\n")
    tables = {"pass": [], "captum": [], "overhead": []}
    pictures = shape_pictures(args.batch, args.size)
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        for parameter in native.parameters():
            parameter.requires_grad_(False)
        model = load_model(export_native(native, args.size), use_cache=False)
        batch = torch.rand(args.batch, 3, args.size, args.size)
        targets = torch.zeros(args.batch, dtype=torch.long)
        objective = objective_for(model, classes=targets)
        layer = native_cam_layer(name, native)
        size = batch.shape[-2:]
        cam_params = {"layer": "", "weighting": "gradcam", "upsample": "bilinear", "region": "", "reduce": "max"}
        library = LibraryGradCAM(model=native, target_layers=[layer])
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        measure = {
            "native": forward_backward(native, batch),
            "converted": forward_backward(model.module, batch),
            "captum_saliency": lambda: Saliency(native).attribute(batch.clone(), target=targets),
            "ours_saliency": lambda: OurSaliency().attribute(model, batch, objective, cam_params),
            "captum_gbp": lambda: GuidedBackprop(native).attribute(batch.clone(), target=targets),
            "ours_gbp": lambda: OurGuidedBackprop().attribute(model, batch, objective, cam_params),
            "captum_gradcam": lambda: LayerAttribution.interpolate(
                LayerGradCam(native, layer).attribute(batch.clone(), target=targets, relu_attributions=True), size, "bilinear"
            ),
            "library_gradcam": lambda: library(input_tensor=batch.clone().requires_grad_(True), targets=chosen),
            "ours_gradcam": lambda: GradCAM().attribute(model, batch, objective, cam_params),
            "captum_ggc": lambda: GuidedGradCam(native, layer).attribute(batch.clone(), target=targets),
            "ours_ggc": lambda: GuidedGradCAM().attribute(model, batch, objective, {**cam_params, "upsample": "nearest"}),
            "run_saliency": lambda: run_technique("saliency", model, pictures, CHECKS_OFF),
            "run_gbp": lambda: run_technique("guided_backprop", model, pictures, CHECKS_OFF),
            "run_gradcam": lambda: run_technique("gradcam", model, pictures, CHECKS_OFF),
        }
        t = {key: median_seconds(work, args.repeats) for key, work in measure.items()}
        tables["pass"].append(f"| {name} | {t['native']:.3f} | {t['converted']:.3f} | {t['converted'] / t['native']:.2f} |")
        tables["captum"].append(
            f"| {name} | {t['ours_saliency'] / t['captum_saliency']:.2f} | {t['ours_gbp'] / t['captum_gbp']:.2f} | "
            f"{t['ours_gradcam'] / t['captum_gradcam']:.2f} | {t['ours_gradcam'] / t['library_gradcam']:.2f} | "
            f"{t['ours_ggc'] / t['captum_ggc']:.2f} | {t['ours_saliency']:.3f} / {t['captum_saliency']:.3f} | "
            f"{t['ours_gradcam']:.3f} / {t['captum_gradcam']:.3f} / {t['library_gradcam']:.3f} | {t['ours_ggc']:.3f} / {t['captum_ggc']:.3f} |"
        )
        tables["overhead"].append(
            f"| {name} | {t['converted']:.3f} | {t['run_saliency']:.3f} | {t['run_saliency'] / t['converted']:.2f} | "
            f"{t['run_gbp']:.3f} | {t['run_gbp'] / t['converted']:.2f} | {t['run_gradcam']:.3f} | {t['run_gradcam'] / t['converted']:.2f} |"
        )
        print(tables["pass"][-1], tables["captum"][-1], tables["overhead"][-1], sep="\n", flush=True)

    print("\nforward+backward, converted graph vs native module\n")
    print("| model | native s | converted s | ratio |\n|---|---|---|---|")
    print("\n".join(tables["pass"]))
    print("\nours (converted graph) over the reference (native module)\n")
    print(
        "| model | saliency / Captum | guided backprop / Captum | Grad-CAM / Captum | Grad-CAM / pytorch-grad-cam | "
        "Guided Grad-CAM / Captum | saliency s (ours / Captum) | Grad-CAM s (ours / Captum / pgc) | Guided Grad-CAM s (ours / Captum) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(tables["captum"]))
    print("\nwhole technique run (16 generated shape pictures in, every picture rendered, checks off) over one bare forward+backward\n")
    print("| model | bare fwd+bwd s | saliency run s | ratio | guided backprop run s | ratio | Grad-CAM run s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(tables["overhead"]))


if __name__ == "__main__":
    main()
