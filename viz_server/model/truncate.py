"""The converted graph cut after a few layers: a module that returns those layers' outputs and computes
nothing the deepest of them does not need.

Techniques that only look at inner layers (style transfer, feature inversion, neuron visualization, activation
maps) otherwise pay for the whole network on every step. onnx2torch builds a ``torch.fx.GraphModule`` in which
every ONNX node is one ``call_module`` node, so the cut is: make those nodes the graph's output and drop the
dead code. Gradients through the cut graph are the same as through the full one.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


class LayerOutputs(nn.Module):
    """``forward(x)`` -> {layer: output}: names the tuple a cut graph (``cut_after``) returns."""

    def __init__(self, layers: list[str], cut: nn.Module):
        super().__init__()
        self.layers, self.cut = list(layers), cut

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return dict(zip(self.layers, self.cut(x)))


def cut_after(graph: torch.fx.GraphModule, module_names: list[str]) -> torch.fx.GraphModule:
    """A copy of ``graph`` whose output is the tuple of these submodules' outputs, everything after them dropped.

    The submodules are shared with ``graph`` (no weights are copied)."""
    cut = torch.fx.GraphModule(graph, copy.deepcopy(graph.graph))
    nodes = {node.target: node for node in cut.graph.nodes if node.op == "call_module"}
    missing = [name for name in module_names if name not in nodes]
    if missing:
        raise KeyError(f"no call_module node for {missing}")
    output = next(node for node in cut.graph.nodes if node.op == "output")
    output.args = (tuple(nodes[name] for name in module_names),)
    cut.graph.eliminate_dead_code()
    cut.delete_all_unused_submodules()
    cut.recompile()
    return cut.eval()
