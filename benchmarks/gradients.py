"""Side-by-side speed of gradient work: the converted graph against the native torch module, and our
techniques against Captum on the native module. Ratios from one run, median of ``--repeats`` timings.

Run: ``python -m benchmarks.gradients [--models resnet18,mobilenet_v2] [--batch 16] [--size 224] [--repeats 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import platform
import statistics
import time
import warnings

import torch
import torchvision

from viz_server.model.loaded import load_model


def export(module: torch.nn.Module, size: int) -> bytes:
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(1, 3, size, size),), buffer, input_names=["x"], output_names=["y"],
                          opset_version=17, dynamo=False, dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    return buffer.getvalue()


def median_seconds(work, repeats: int) -> float:
    work()  # warm-up
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        work()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def forward_backward(module, batch):
    def work():
        inputs = batch.clone().requires_grad_(True)
        module(inputs)[:, 0].sum().backward()

    return work


CAM_LAYERS = {"resnet18": lambda m: m.layer4[-1], "mobilenet_v2": lambda m: m.features[-1], "resnet50": lambda m: m.layer4[-1]}


def cam_rows(name: str, native, model, batch, targets, repeats: int) -> str:
    """Grad-CAM and guided backprop: ours (converted graph) vs Captum and pytorch-grad-cam (native module)."""
    from captum.attr import GuidedBackprop, LayerAttribution, LayerGradCam

    from viz_server_plugins.gradcam import GradCAM
    from viz_server_plugins.guided_backprop import GuidedBackprop as OurGuidedBackprop

    layer = CAM_LAYERS[name](native)
    size = batch.shape[-2:]

    def captum_cam():
        LayerAttribution.interpolate(LayerGradCam(native, layer).attribute(batch.clone(), target=targets, relu_attributions=True), size, "bilinear")

    ours_cam = GradCAM()
    cam_params = {"layer": "", "weighting": "gradcam", "upsample": "bilinear", "region": ""}
    times = {
        "captum_gradcam": median_seconds(captum_cam, repeats),
        "ours_gradcam": median_seconds(lambda: ours_cam.attribute(model, batch, targets, cam_params), repeats),
        "captum_gbp": median_seconds(lambda: GuidedBackprop(native).attribute(batch.clone(), target=targets), repeats),
        "ours_gbp": median_seconds(lambda: OurGuidedBackprop().attribute(model, batch, targets, {"reduce": "max", "region": ""}), repeats),
    }
    try:
        from pytorch_grad_cam import GradCAM as LibraryGradCAM
        from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

        library = LibraryGradCAM(model=native, target_layers=[layer])
        chosen = [ClassifierOutputTarget(int(t)) for t in targets]
        times["library_gradcam"] = median_seconds(lambda: library(input_tensor=batch.clone().requires_grad_(True), targets=chosen), repeats)
    except ImportError:
        times["library_gradcam"] = float("nan")
    return (f"| {name} | {times['ours_gradcam']:.3f} | {times['captum_gradcam']:.3f} | {times['ours_gradcam'] / times['captum_gradcam']:.2f} | "
            f"{times['library_gradcam']:.3f} | {times['ours_gradcam'] / times['library_gradcam']:.2f} | "
            f"{times['ours_gbp']:.3f} | {times['captum_gbp']:.3f} | {times['ours_gbp'] / times['captum_gbp']:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="resnet18,mobilenet_v2")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    from captum.attr import Saliency

    from viz_server_plugins.saliency import Saliency as OurSaliency

    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, "
          f"batch {args.batch} at {args.size}x{args.size}, median of {args.repeats}\n")
    print("| model | native fwd+bwd s | converted fwd+bwd s | ratio converted/native | Captum saliency (native) s | our saliency (converted) s | ratio ours/Captum |")
    print("|---|---|---|---|---|---|---|")
    cam_table = []
    for name in args.models.split(","):
        native = torchvision.models.get_model(name, weights=None).eval()
        for parameter in native.parameters():
            parameter.requires_grad_(False)
        model = load_model(export(native, args.size), use_cache=False)
        batch = torch.rand(args.batch, 3, args.size, args.size)
        targets = torch.zeros(args.batch, dtype=torch.long)
        native_time = median_seconds(forward_backward(native, batch), args.repeats)
        converted_time = median_seconds(forward_backward(model.module, batch), args.repeats)
        captum_time = median_seconds(lambda: Saliency(native).attribute(batch.clone(), target=targets), args.repeats)
        ours = OurSaliency()
        our_time = median_seconds(lambda: ours.attribute(model, batch, targets, {"reduce": "max"}), args.repeats)
        print(f"| {name} | {native_time:.3f} | {converted_time:.3f} | {converted_time / native_time:.2f} | "
              f"{captum_time:.3f} | {our_time:.3f} | {our_time / captum_time:.2f} |", flush=True)
        if name in CAM_LAYERS:
            cam_table.append(cam_rows(name, native, model, batch, targets, args.repeats))
    if cam_table:
        print("\n| model | our Grad-CAM s | Captum LayerGradCam s | ratio | pytorch-grad-cam s | ratio | our guided backprop s | Captum s | ratio |")
        print("|---|---|---|---|---|---|---|---|---|")
        print("\n".join(cam_table))


if __name__ == "__main__":
    main()
