"""A vision transformer's attention, read from the graph: the softmax(QK^T) nodes over an image's tokens, and the
two ways of following it from the output to the patches.

- Attention rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers"): each layer's attention,
  averaged over heads, with the residual's identity added (0.5 A + 0.5 I, rows normalized), multiplied from the
  first layer up; the class token's row over the patch tokens is the map. It does not depend on the class.
- Gradient-weighted attention (Chefer, Gur & Wolf 2021, "Generic Attention-model Explainability for Interpreting
  Bi-Modal and Encoder-Decoder Transformers"): R = I, then R += mean over heads of (dA ⊙ A)^+ · R for each layer,
  with dA the gradient of the explained score; the class token's row over the patch tokens is the map.

Where the graph shows no such softmax (attention fused into one op, or windowed as Swin's, whose softmax spans one
local window and not the image), ``attention_layers`` refuses in one sentence saying which.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from viz_server.errors import UserError

FUSED_OPS = frozenset({"Attention", "MultiHeadAttention", "PackedMultiHeadAttention", "GroupQueryAttention", "SparseAttention"})


@dataclass(frozen=True)
class AttentionLayers:
    names: tuple[str, ...]  # the softmax(QK^T) nodes, first layer first
    grid: tuple[int, int]  # (h, w) of the patch tokens
    leading: int  # class (and distillation) tokens before them


def attention_layers(model) -> AttentionLayers:
    """The softmax nodes of ``model`` whose output is N x heads x T x T over the T tokens of its image grid (the
    layer table's token layers: ``leading`` + h*w); one sentence when the attention is not visible as such."""
    fused = sorted({node.op_type for node in model.onnx_model.graph.node if node.op_type in FUSED_OPS})
    if fused:
        raise UserError(f"{model.name} computes attention in fused {', '.join(fused)} nodes, so its attention weights are not visible in the graph.")
    grids = {layer.leading_tokens + layer.grid[0] * layer.grid[1]: (layer.grid, layer.leading_tokens) for layer in model.layers if layer.tokens == "sequence"}
    softmaxes = [layer for layer in model.layers if layer.op == "Softmax" and len(layer.output_shape) == 4 and layer.output_shape[-1] == layer.output_shape[-2]]
    found = [layer.name for layer in softmaxes if layer.output_shape[-1] in grids]
    if not found:
        if softmaxes:
            sizes = sorted({layer.output_shape[-1] for layer in softmaxes if layer.output_shape[-1]})
            raise UserError(
                f"{model.name}'s attention softmaxes span {', '.join(map(str, sizes[:3]))} tokens, not the image's patches (windowed attention, as "
                "Swin's), so attention cannot be followed from the output to the image."
            )
        raise UserError(
            f"{model.name} shows no attention softmax over image tokens (N x heads x T x T) in its graph; it is not a vision transformer viz-server can read."
        )
    spans = {model.layer(name).output_shape[-1] for name in found}
    widest = max(layer.leading_tokens + layer.grid[0] * layer.grid[1] for layer in model.layers if layer.grid)
    if len(spans) > 1 or widest > max(spans):
        raise UserError(
            f"{model.name}'s attention softmaxes span {', '.join(map(str, sorted(spans)[:3]))} tokens while its image has up to {widest} "
            "(windowed attention, as Swin's), so attention cannot be followed from the output to the image."
        )
    grid, leading = grids[spans.pop()]
    return AttentionLayers(tuple(found), grid, leading)


def rollout(attentions: list[np.ndarray], layers: AttentionLayers) -> np.ndarray:
    """N x h x w: attention rollout of per-layer N x heads x T x T attentions (first layer first)."""
    tokens = attentions[0].shape[-1]
    mixed = []
    for attention in attentions:
        values = 0.5 * attention.mean(1, dtype=np.float64) + 0.5 * np.eye(tokens)
        mixed.append(values / values.sum(-1, keepdims=True))
    return _patch_row(mixed, layers)


def gradient_weighted(attentions: list[torch.Tensor], gradients: list[torch.Tensor], layers: AttentionLayers) -> np.ndarray:
    """N x h x w: Chefer et al.'s relevance from per-layer attentions and their gradients (first layer first):
    R = (I + W_L) ... (I + W_1), W_l the positive part of gradient x attention averaged over the heads."""
    tokens = attentions[0].shape[-1]
    identity = np.eye(tokens)
    steps = [(gradient.double() * attention.double()).clamp(min=0).mean(1).numpy() + identity for attention, gradient in zip(attentions, gradients)]
    return _patch_row(steps, layers)


def _patch_row(steps: list[np.ndarray], layers: AttentionLayers) -> np.ndarray:
    """The class token's row of the product of the per-layer N x T x T ``steps`` (last layer leftmost) over the patch
    tokens, on the grid; without a class token the mean row, as pooling reads every token alike. Carried as one row
    from the top down (a vector times each matrix), not as the T x T product."""
    count, tokens = steps[0].shape[:2]
    start = np.zeros(tokens) if layers.leading else np.full(tokens, 1.0 / tokens)
    if layers.leading:
        start[0] = 1.0
    row = np.broadcast_to(start, (count, 1, tokens))
    for step in reversed(steps):
        row = row @ step
    height, width = layers.grid
    return row[:, 0, layers.leading :].reshape(count, height, width)


def captured_attention(model, images: torch.Tensor, objective, layers: AttentionLayers) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Each attention layer's output and the gradient of ``objective`` with respect to it (one forward, one backward
    on the torch graph), where ``images`` are (the graph may compute on a GPU)."""
    captured: list[torch.Tensor] = []

    def keep(_module, _inputs, output):
        captured.append(output)

    handles = [model.submodule(name).register_forward_hook(keep) for name in layers.names]
    try:
        with torch.enable_grad():
            scores = model.module(images.detach().clone().requires_grad_(True))
            gradients = torch.autograd.grad(objective.total(scores), captured)
    finally:
        for handle in handles:
            handle.remove()
    # a graph that takes one batch size runs the images in chunks: each layer fired once per chunk, in order
    count = len(layers.names)
    return (
        [torch.cat([values.detach() for values in captured[index::count]]).to(images.device) for index in range(count)],
        [torch.cat([gradient.detach() for gradient in gradients[index::count]]).to(images.device) for index in range(count)],
    )
