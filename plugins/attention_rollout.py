"""Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): how much of the class
token's attention, followed through every layer with the residual's identity mixed in, comes from each patch.
Forward passes only (the attention weights, read on onnxruntime); the same map whatever class is explained."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server_plugins.toolkit import attention, sanity
from viz_server_plugins.toolkit.cam import upsample
from viz_server_plugins.toolkit.perturbation import ForwardAttribution


class AttentionRollout(ForwardAttribution):
    name = "attention_rollout"
    title = "Attention rollout"
    summary = "Where the class token's attention comes from, followed through every layer of a vision transformer (Abnar & Zuidema 2020)."
    caveats = (
        "Attention rollout does not depend on the class explained: every target gets the same map, which shows where the model looks, not why it decides.",
    )

    def fits(self, model) -> bool:
        return any(layer.tokens for layer in model.layers)

    def sanity_cascade(self, seed: int):
        """Re-draw the layers that feed the attention weights read (from the last block's down), not the head."""
        return sanity.InitializerCascade(seed, reads=lambda model: list(attention.attention_layers(model).names))

    def attribute(self, model, images, objective, params):
        layers = attention.attention_layers(model)
        scores, weights = model.predict_with_layers(images.detach().cpu().numpy(), list(layers.names))  # one forward pass
        objective.resolve(torch.from_numpy(scores))
        maps = attention.rollout([weights[name] for name in layers.names], layers)
        return upsample(torch.from_numpy(maps).float(), model.spec, "bilinear")


@hookimpl
def register_techniques():
    return [AttentionRollout()]
