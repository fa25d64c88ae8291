"""Attack strength and time, ours against torchattacks, on the same function, images and budget (L-inf 8/255).

Both sides attack the same converted graph through the same unit-space wrapper, so only the attack code
differs. Rows: PGD-10 (theirs on cross-entropy; ours on the margin, and on cross-entropy with captum's gradient
floor, our old default), APGD-CE and APGD-T (DLR, 3 target classes) at 50 steps, Square at 300 queries, and
the ensemble (ours: APGD-CE, APGD-T, Square on what stands; theirs: torchattacks' MultiAttack of the same
three). Success = share of images whose prediction changed (onnxruntime for ours, the same graph for theirs).
Models: the shipped shapes CNN (trained), the same with its scores x100 (a confident model, where
cross-entropy underflows), random-weight ResNet-18 and MobileNet-V2 at 224 x 224 on random images.

torchattacks pins ``requests~=2.25.1``; install it without its dependencies: ``pip install --no-deps torchattacks``.
The ``autoattack`` package is not on PyPI (only on GitHub), so it cannot be installed here.

Run: ``python -m benchmarks.attacks [--repeats 1] [--batch 8]``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import onnx
import torch
import torchvision
from onnx import helper, numpy_helper

from benchmarks.common import export_native, software_line
from viz_server.model.pipeline import load_model
from viz_server_models import shapes, shipped_models
from viz_server_plugins.toolkit import attacks
from viz_server_plugins.toolkit.apgd import apgd
from viz_server_plugins.toolkit.optimization import to_model_space
from viz_server_plugins.toolkit.robust_evaluation import ensemble
from viz_server_plugins.toolkit.square import square_attack

EPSILON = 8 / 255


class UnitModule(torch.nn.Module):
    """The converted graph behind the spec's mapping, for N x 3 x H x W images in [0, 1] (torchattacks' convention)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images):
        return self.model.module(to_model_space(self.model.spec, images.permute(0, 2, 3, 1)))


def scaled(data: bytes, factor: float) -> bytes:
    model = onnx.load_from_string(data)
    output = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [output + "_raw" if name == output else name for name in node.output]
    model.graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "factor_"))
    model.graph.node.append(helper.make_node("Mul", [output + "_raw", "factor_"], [output], name="scale"))
    return model.SerializeToString()


def cases(batch: int):
    rng = np.random.default_rng(0)
    data = shapes.make_dataset(batch, seed=11)
    unit = torch.from_numpy(data.images.astype(np.float32) / 255.0)
    shapes_bytes = shipped_models()["shapes_cnn"].read_bytes()
    yield "shapes_cnn (trained)", load_model(shapes_bytes, use_cache=False), unit
    yield "shapes_cnn x100 (confident)", load_model(scaled(shapes_bytes, 100.0), use_cache=False), unit
    for name in ("resnet18", "mobilenet_v2"):
        torch.manual_seed(0)
        native = torchvision.models.get_model(name, weights=None).eval()
        yield (
            f"{name} (random weights)",
            load_model(export_native(native, 224), use_cache=False),
            torch.from_numpy(rng.random((batch, 224, 224, 3), np.float32)),
        )


def apgdt(wrapped, classes: int):
    """torchattacks' APGDT aims at every other class by default; give it our budget: the top 3."""
    attack = torchattacks_module().APGDT(wrapped, eps=EPSILON, steps=50, n_restarts=1, n_classes=classes)
    attack.n_target_classes = min(3, classes - 1)
    return attack


def torchattacks_module():
    import torchattacks

    return torchattacks


def timed(work):
    started = time.perf_counter()
    result = work()
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    try:
        import torchattacks
    except ImportError:
        raise SystemExit("torchattacks is not installed; install it with: python3 -m pip install --no-deps torchattacks") from None
    torch.manual_seed(0)
    print(software_line("torchattacks"))
    print(f"L-inf epsilon 8/255, batch {args.batch}; success = share of predictions changed; one run each\n")
    print("| model | attack | ours success | theirs success | ours s | theirs s | time ratio |\n|---|---|---|---|---|---|---|")
    for title, model, unit in cases(args.batch):
        wrapped = UnitModule(model).eval()
        images = unit.permute(0, 3, 1, 2).contiguous()
        labels = attacks.predicted_classes(model, unit)
        forward = attacks.unit_forward(model)
        classes = int(model.spec.num_classes)

        def ours_rate(adversarial_unit):
            return float((attacks.predicted_classes(model, adversarial_unit) != labels).float().mean())

        def theirs_rate(adversarial_images):
            with torch.no_grad():
                return float((wrapped(adversarial_images).argmax(1) != labels).float().mean())

        generator = torch.Generator().manual_seed(0)
        rows = [
            (
                "PGD-10 (ours margin / theirs CE)",
                lambda: ours_rate(attacks.pgd(forward, unit, labels, EPSILON, 2 / 255, 10, random_start=True, generator=generator)),
                lambda: theirs_rate(torchattacks.PGD(wrapped, eps=EPSILON, alpha=2 / 255, steps=10, random_start=True)(images, labels)),
            ),
            (
                "PGD-10 (ours CE with captum's floor / theirs CE)",
                lambda: ours_rate(
                    attacks.pgd(
                        forward,
                        unit,
                        labels,
                        EPSILON,
                        2 / 255,
                        10,
                        random_start=True,
                        generator=generator,
                        loss="ce",
                        zero_gradient=attacks.CAPTUM_ZERO_GRADIENT,
                    )
                ),
                lambda: theirs_rate(torchattacks.PGD(wrapped, eps=EPSILON, alpha=2 / 255, steps=10, random_start=True)(images, labels)),
            ),
            (
                "APGD-CE, 50 steps",
                lambda: ours_rate(apgd(forward, unit, labels, EPSILON, "Linf", "ce", steps=50, generator=generator).adversarial),
                lambda: theirs_rate(torchattacks.APGD(wrapped, eps=EPSILON, steps=50, loss="ce", n_restarts=1)(images, labels)),
            ),
            (
                "APGD-T (DLR, 3 targets), 50 steps",
                lambda: ours_rate(targeted_apgd(forward, unit, labels, classes)),
                lambda: theirs_rate(apgdt(wrapped, classes)(images, labels)),
            ),
            (
                "Square, 300 queries",
                lambda: ours_rate(
                    torch.from_numpy(square_attack(lambda b: model.predict(model.spec.unit_to_model(b)), unit.numpy(), labels.numpy(), EPSILON, 300)[0])
                ),
                lambda: theirs_rate(torchattacks.Square(wrapped, eps=EPSILON, n_queries=300, n_restarts=1)(images, labels)),
            ),
            (
                "ensemble: APGD-CE, APGD-T, Square",
                lambda: float(ensemble(model, unit, labels, EPSILON, steps=50, targets=3, queries=300).success.mean()),
                lambda: theirs_rate(
                    torchattacks.MultiAttack(
                        [
                            torchattacks.APGD(wrapped, eps=EPSILON, steps=50, loss="ce", n_restarts=1),
                            apgdt(wrapped, classes),
                            torchattacks.Square(wrapped, eps=EPSILON, n_queries=300, n_restarts=1),
                        ]
                    )(images, labels)
                ),
            ),
        ]
        for name, ours, theirs in rows:
            ours_success, ours_seconds = timed(ours)
            theirs_success, theirs_seconds = timed(theirs)
            print(
                f"| {title} | {name} | {ours_success:.2f} | {theirs_success:.2f} | {ours_seconds:.2f} | {theirs_seconds:.2f} | "
                f"{ours_seconds / theirs_seconds:.2f} |",
                flush=True,
            )


def targeted_apgd(forward, unit, labels, classes):
    """APGD on the targeted DLR loss towards each of the top 3 other classes in turn, on what still stands."""
    with torch.no_grad():
        logits = forward(unit)
    ranked = logits.masked_fill(torch.nn.functional.one_hot(labels, classes).bool(), float("-inf")).argsort(1, descending=True)
    result, standing = unit.clone(), torch.ones(len(unit), dtype=torch.bool)
    generator = torch.Generator().manual_seed(0)
    for rank in range(min(3, classes - 1)):
        rows = torch.nonzero(standing).flatten()
        if not len(rows):
            break
        run = apgd(forward, unit[rows], labels[rows], EPSILON, "Linf", "dlr", targets=ranked[rows, rank], steps=50, generator=generator)
        result[rows] = run.adversarial
        standing[rows[run.success]] = False
    return result


if __name__ == "__main__":
    main()
