"""Style transfer on the uploaded model's own features (Gatys, Ecker & Bethge 2016; lecture notes, "Style
Transfer"): content loss on one layer's features, style loss on Gram matrices summed over layers, total
variation, optimized with L-BFGS or Adam from the content image or from noise.

Modes: ``transfer`` (content + style), ``content`` (reconstruction from one layer) and ``texture`` (synthesis
of the style image's texture). ``softmax`` applies a softmax over each channel's spatial map first, which helps
residual networks (Wang et al. 2021, "Rethinking and Improving the Robustness of Image Style Transfer").
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import png_bytes
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import default_layers
from viz_server_plugins.toolkit.optimization import display, to_model_space, total_variation


def gram(features: torch.Tensor) -> torch.Tensor:
    """N x C x C Gram matrices of N x C x H x W features, normalized by C x H x W."""
    n, c, h, w = features.shape
    flat = features.reshape(n, c, h * w)
    return flat @ flat.transpose(1, 2) / (c * h * w)


def style_loss(features: dict[str, torch.Tensor], style_grams: dict[str, torch.Tensor]) -> torch.Tensor:
    return sum(((gram(features[name]) - target) ** 2).sum() for name, target in style_grams.items())


def content_loss(features: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((features - target) ** 2).mean()


class FeatureExtractor:
    """``__call__``: unit-space batch -> the chosen layers' outputs, from a graph that stops at the deepest."""

    def __init__(self, model, layers: list[str], softmax: bool):
        self.model, self.softmax = model, softmax
        self.extract = model.feature_extractor(layers)

    def __call__(self, unit: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.extract(to_model_space(self.model.spec, unit))
        if self.softmax:
            features = {name: spatial_softmax(output) for name, output in features.items()}
        return features


def spatial_softmax(output: torch.Tensor) -> torch.Tensor:
    n, c, h, w = output.shape
    return torch.softmax(output.reshape(n, c, h * w), dim=2).reshape(n, c, h, w)


class StyleTransfer(Technique):
    name = "style_transfer"
    title = "Style transfer"
    family = "style"
    summary = "Content of the first image in the texture of the second, from the model's own features (Gatys et al. 2016)."
    params = (
        Param(
            "mode",
            "choice",
            "transfer",
            "transfer (content + style), content (reconstruction) or texture (synthesis).",
            choices=("transfer", "content", "texture"),
        ),
        Param("style_layers", "str", "", "Comma-separated layers for the style loss; empty = the model's early spatial layers."),
        Param("content_layer", "layer", "", "Layer for the content loss; empty = a middle spatial layer."),
        Param("style_weight", "float", 1e4, "Weight of the style loss.", minimum=0.0, maximum=1e12),
        Param("content_weight", "float", 1.0, "Weight of the content loss.", minimum=0.0, maximum=1e12),
        Param("tv_weight", "float", 1e-3, "Weight of total variation.", minimum=0.0, maximum=1e6),
        Param("optimizer", "choice", "lbfgs", "L-BFGS (as Gatys et al.) or Adam.", choices=("lbfgs", "adam")),
        Param("steps", "int", 100, "Optimizer steps.", minimum=1, maximum=5000),
        Param("learning_rate", "float", 0.02, "Adam's learning rate (L-BFGS uses 1).", minimum=1e-5, maximum=10.0),
        Param("start", "choice", "content", "Start from the content image or from seeded noise.", choices=("content", "noise")),
        Param("softmax", "bool", False, "Softmax over each channel's map before the losses (Wang et al. 2021)."),
    )
    inputs = ("image", "second_image")

    def run(self, ctx: Context, params: dict) -> Result:
        model, spec = ctx.model, ctx.model.spec
        spatial = default_layers(model, 6)
        if not spatial:
            raise UserError("style transfer needs spatial layers (N x C x H x W); this model has none.")
        style_layers = [n.strip() for n in params["style_layers"].split(",") if n.strip()] or spatial[: max(1, min(4, len(spatial) - 1))]
        content_layer = params["content_layer"] or spatial[len(spatial) // 2]
        for name in style_layers + [content_layer]:
            if len(model.layer(name).output_shape) != 4:
                raise UserError(f"layer '{name}' is not a spatial map; style and content layers must be N x C x H x W.")
        content = torch.from_numpy(spec.model_to_unit(ctx.images[:1].numpy())).clamp(0, 1)
        style = torch.from_numpy(spec.model_to_unit(ctx.second_image.numpy())).clamp(0, 1)
        extractor = FeatureExtractor(model, sorted(set(style_layers + [content_layer])), params["softmax"])
        with torch.no_grad():
            style_grams = {name: gram(extractor(style)[name]) for name in style_layers}
            content_target = extractor(content)[content_layer]
        mode = params["mode"]
        weights = {"style": 0.0 if mode == "content" else params["style_weight"], "content": 0.0 if mode == "texture" else params["content_weight"]}
        start = content if params["start"] == "content" and mode != "texture" else torch.rand(content.shape, generator=ctx.torch_generator())
        image = start.clone().requires_grad_(True)
        losses: list[dict[str, float]] = []

        def objective() -> torch.Tensor:
            features = extractor(image)
            style_term = weights["style"] * style_loss(features, style_grams) if weights["style"] else torch.zeros(())
            content_term = weights["content"] * content_loss(features[content_layer], content_target) if weights["content"] else torch.zeros(())
            total = style_term + content_term + (params["tv_weight"] * total_variation(image) if params["tv_weight"] else 0.0)
            losses.append({"total": float(total), "style": float(style_term), "content": float(content_term)})
            return total

        self._optimize(ctx, image, objective, params)
        final = image.detach().clamp(0, 1)
        captions = {
            "transfer": "content of the first image in the style of the second",
            "content": f"content rebuilt from {content_layer}",
            "texture": "the second image's texture, synthesized",
        }
        result = Result(
            artifacts=[
                Artifact("stylized.png", captions[mode], data=png_bytes(display(spec, final[0].numpy()), 224), array="stylized", group="result"),
                Artifact("content.png", "content image", data=png_bytes(display(spec, content[0].numpy()), 128), array="inputs", group="inputs"),
                Artifact("style.png", "style image", data=png_bytes(display(spec, style[0].numpy()), 128), array="style", group="inputs"),
            ],
            arrays={
                "stylized": spec.unit_to_model(final.numpy()),
                "style": spec.unit_to_model(style.numpy()),
                "loss": np.asarray([entry["total"] for entry in losses], np.float32),
            },
            metrics={
                "mode": mode,
                "style_layers": style_layers,
                "content_layer": content_layer,
                "initial_loss": round(losses[0]["total"], 6),
                "final_loss": round(losses[-1]["total"], 6),
                "evaluations": len(losses),
            },
            caveats=[
                "The picture shows which statistics these layers capture; a small classifier's features give far "
                "cruder textures than the VGG features style transfer was designed on."
            ],
        )
        return result

    @staticmethod
    def _optimize(ctx: Context, image: torch.Tensor, objective, params: dict) -> None:
        steps = params["steps"]
        if params["optimizer"] == "adam":
            optimizer = torch.optim.Adam([image], lr=params["learning_rate"])
            for step in range(steps):
                optimizer.zero_grad()
                with torch.enable_grad():
                    loss = objective()
                    loss.backward()
                optimizer.step()
                with torch.no_grad():
                    image.clamp_(0, 1)
                if step % 10 == 0 or step == steps - 1:
                    ctx.progress(step + 1, steps, f"step {step + 1}: loss {float(loss):.4g}")
            return
        optimizer = torch.optim.LBFGS([image], lr=1.0, max_iter=1)

        def closure():
            optimizer.zero_grad()
            with torch.enable_grad():
                loss = objective()
                loss.backward()
            image.grad = image.grad.contiguous()  # the layout permute leaves a strided gradient; L-BFGS flattens it
            return loss

        for step in range(steps):
            loss = optimizer.step(closure)
            with torch.no_grad():
                image.clamp_(0, 1)
            if step % 10 == 0 or step == steps - 1:
                ctx.progress(step + 1, steps, f"step {step + 1}: loss {float(loss):.4g}")


@hookimpl
def register_techniques():
    return [StyleTransfer()]
