"""Fooling images (lecture notes, "Testing Robustness"; Szegedy et al. 2014): from a real image, gradient
ascent on an arbitrary wrong class's score until the model predicts it, and how large the change had to be."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit import attacks
from viz_server_plugins.toolkit.optimization import display
from viz_server_plugins.toolkit.pictures import amplified


class FoolingImage(Technique):
    name = "fooling_image"
    title = "Fooling image"
    family = "robustness"
    tasks = ("classification",)
    summary = "Nudge a real image until the model calls it a class of your choice; report the L-inf and L2 change needed."
    params = (
        Param("target", "target", "1", "The (wrong) class to reach: an index or a label."),
        Param("step_size", "float", 1 / 255, "Change per step, per value, in image space.", minimum=1e-6, maximum=1.0),
        Param("max_steps", "int", 200, "Give up after this many steps.", minimum=1, maximum=5000),
    )
    inputs = ("image",)

    def run(self, ctx: Context, params: dict) -> Result:
        spec = ctx.model.spec
        target = spec.class_index(params["target"])
        unit = torch.from_numpy(spec.model_to_unit(ctx.images.numpy())).clamp(0, 1)
        forward = attacks.unit_forward(ctx.model)
        before = attacks.predicted_classes(ctx.model, unit)
        fooled, steps = attacks.fooling_image(
            forward,
            unit,
            torch.full_like(before, target),
            params["step_size"],
            params["max_steps"],
            on_step=lambda step: ctx.progress(step + 1, params["max_steps"], f"step {step + 1}"),
        )
        linf, l2 = attacks.perturbation_sizes(unit, fooled)
        label = spec.label(target)
        result = Result(
            arrays={"fooled": spec.unit_to_model(fooled.numpy()), "perturbation": (fooled - unit).numpy(), "steps": steps.numpy()},
            metrics={
                "target": label,
                "before": [spec.label(int(i)) for i in before],
                "reached": (steps >= 0).tolist(),
                "steps": steps.tolist(),
                "linf": [round(v, 6) for v in linf],
                "l2": [round(v, 6) for v in l2],
            },
            caveats=["The change needed is an upper bound: a better optimizer may fool the model with less."],
        )
        for index in range(len(unit)):
            name = ctx.image_names[index] if index < len(ctx.image_names) else str(index)
            outcome = f"now {label} after {int(steps[index])} steps" if steps[index] >= 0 else f"not {label} after {params['max_steps']} steps"
            group = f"{index}: {name}"
            result.artifacts += [
                Artifact(
                    f"original_{index}.png",
                    f"original: {spec.label(int(before[index]))}",
                    data=png_bytes(display(spec, unit[index].numpy()), 128),
                    array="inputs",
                    group=group,
                ),
                Artifact(f"fooled_{index}.png", outcome, data=png_bytes(display(spec, fooled[index].numpy()), 128), array="fooled", group=group),
                Artifact(
                    f"change_{index}.png",
                    f"change, amplified (L-inf {linf[index]:.4f}, L2 {l2[index]:.3f})",
                    data=png_bytes(display(spec, amplified((fooled - unit)[index].numpy())), 128),
                    array="perturbation",
                    group=group,
                ),
            ]
        return result


@hookimpl
def register_techniques():
    return [FoolingImage()]
