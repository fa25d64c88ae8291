"""Transformer attribution by gradient-weighted attention (Chefer, Gur & Wolf 2021, "Generic Attention-model
Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers"): each layer's attention weighted by
its gradient for the explained class (positive part, mean over heads), accumulated from the first layer up with
the residual's identity; the class token's row over the patches is the map."""

from __future__ import annotations

import torch

from viz_server import hookimpl
from viz_server_plugins.toolkit import attention
from viz_server_plugins.toolkit.attribution import AttributionTechnique
from viz_server_plugins.toolkit.cam import upsample


class TransformerAttribution(AttributionTechnique):
    name = "transformer_attribution"
    title = "Transformer attribution"
    summary = "Each attention layer weighted by its gradient for the class, followed from the patches to the class token (Chefer et al. 2021)."
    map_kind = "map"

    def fits(self, model) -> bool:
        return any(layer.tokens for layer in model.layers)

    def attribute(self, model, images, objective, params):
        layers = attention.attention_layers(model)
        weights, gradients = attention.captured_attention(model, images, objective, layers)
        maps = attention.gradient_weighted(weights, gradients, layers)
        return upsample(torch.from_numpy(maps).float(), model.spec, "bilinear")


@hookimpl
def register_techniques():
    return [TransformerAttribution()]
