"""Peak memory of saliency on ResNet-50, batch 16 at 224²: ours on the converted graph against Captum's
``Saliency`` on the native module. Each side runs in a fresh process; the kernel's high-water mark (VmHWM)
is reset just before the call (``/proc/self/clear_refs``), so the figures are the peak while attributing,
and the whole process's peak (imports, model, onnxruntime session included) is shown next to them.

Run: ``python -m benchmarks.memory [--model resnet50] [--batch 16]`` (Linux only).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import warnings


def resident_mb(field: str) -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(side: str, name: str, batch_size: int) -> dict:
    import torch
    import torchvision

    from benchmarks.common import export_native

    warnings.simplefilter("ignore")
    native = torchvision.models.get_model(name, weights=None).eval()
    for parameter in native.parameters():
        parameter.requires_grad_(False)
    batch = torch.rand(batch_size, 3, 224, 224)
    targets = torch.zeros(batch_size, dtype=torch.long)
    if side == "ours":
        from viz_server.model.pipeline import load_model
        from viz_server.testing import objective_for
        from viz_server_plugins.saliency import Saliency

        model = load_model(export_native(native, 224), use_cache=False)
        del native
        objective = objective_for(model, classes=targets)
        work = lambda: Saliency().attribute(model, batch, objective, {"reduce": "max"})  # noqa: E731
    else:
        from captum.attr import Saliency

        work = lambda: Saliency(native).attribute(batch.clone(), target=targets)  # noqa: E731
    import ctypes
    import gc

    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # hand memory freed while loading back to the kernel first
    before = resident_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # reset the high-water mark to the current RSS
    work()
    return {"before_mb": before, "peak_mb": resident_mb("VmHWM"), "process_peak_mb": None}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--side", choices=("ours", "captum"))
    args = parser.parse_args()
    if args.side:
        figures = measure(args.side, args.model, args.batch)
        import resource

        figures["process_peak_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(figures))
        return
    from benchmarks.common import software_line

    print(software_line("captum"))
    print(f"saliency on {args.model}, batch {args.batch} at 224x224\n")
    print("| side | RSS before the call MB | peak during the call MB | added by the call MB | whole-process peak MB |\n|---|---|---|---|---|")
    added = {}
    for side in ("captum", "ours"):
        output = subprocess.run(
            [sys.executable, "-m", "benchmarks.memory", "--side", side, "--model", args.model, "--batch", str(args.batch)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        figures = json.loads(output.strip().splitlines()[-1])
        added[side] = figures["peak_mb"] - figures["before_mb"]
        print(f"| {side} | {figures['before_mb']:.0f} | {figures['peak_mb']:.0f} | {added[side]:.0f} | {figures['process_peak_mb']:.0f} |", flush=True)
    print(f"\nadded by the call, ours / Captum: {added['ours'] / added['captum']:.2f}")


if __name__ == "__main__":
    main()
