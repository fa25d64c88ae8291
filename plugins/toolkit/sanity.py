"""The model-parameter randomization test (Adebayo et al. 2018, "Sanity Checks for Saliency Maps").

Weight layers are re-initialized one after another from the top of the network down (cascading), the map is
recomputed after each step, and its Spearman rank correlation with the original map is reported. A map that
barely changes when the weights are destroyed cannot be explaining what the model learned: it reflects the
input (edges) and the architecture instead.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import torch
from onnx import numpy_helper
from scipy import stats

from viz_server.rendering import captioned_grid, heatmap
from viz_server_plugins.toolkit.degenerate import why_degenerate

PASS_BELOW = 0.5
"""|Spearman rho| after randomizing the top ``sanity_layers`` weight layers below which the map passes."""


@dataclass
class SanityCheck:
    steps: list[str]  # "top 1 layer (name)", ..., "all weight layers"
    correlations: list[float]
    maps: np.ndarray  # (steps + 1) x H x W: the original map first
    verdict: str
    passed: bool | None  # None: cannot judge (the map or a randomized map is empty or constant)

    def to_json(self) -> dict:
        return {
            "steps": self.steps,
            "spearman": [None if np.isnan(c) else round(c, 4) for c in self.correlations],
            "passed": self.passed,
            "threshold": PASS_BELOW,
            "verdict": self.verdict,
        }

    def plot(self) -> bytes:
        titles = ["original"] + [f"{step}\nrho={'n/a' if np.isnan(rho) else f'{rho:.2f}'}" for step, rho in zip(self.steps, self.correlations)]
        return captioned_grid([(heatmap(values), title) for values, title in zip(self.maps, titles)], columns=len(titles), tile_side=130)


def _own_tensors(module: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    """A layer's own floating-point weights, biases and buffers (not its children's), in a fixed order."""
    named = [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]
    return [(name, tensor) for name, tensor in named if tensor.is_floating_point() and tensor.numel() > 1]


def randomize(module: torch.nn.Module, generator: torch.Generator) -> bool:
    """Re-draw a layer's own weights and biases from a normal with the original spread; False if it has none."""
    tensors = _own_tensors(module)
    with torch.no_grad():
        for _, tensor in tensors:
            spread = float(tensor.std()) or 1e-2
            tensor.copy_(torch.randn(tensor.shape, generator=generator) * spread)
    return bool(tensors)


class RandomizedCascade:
    """The randomized models of one cascade: the weight layers that reach one image's target, re-drawn top down
    once and replayed into a fresh copy for every method checked on that image and target, so every method
    meets the very same randomized models and the reaching layers and draws are computed once. Keep one per
    image and target (the attribution ranking keeps one per image for all its methods)."""

    def __init__(self, seed: int):
        self.generator = torch.Generator(device="cpu").manual_seed(seed + 1)
        self.layers: list | None = None
        self.draws: list[dict[str, torch.Tensor]] = []

    def copy_of(self, model, image, objective):
        """A deep copy of ``model`` to randomize; the first call also finds the layers that reach the target."""
        randomized = dataclasses.replace(model, module=copy.deepcopy(model.module))
        if self.layers is None:
            self.layers = reaching_layers(randomized, image, objective)
        return randomized

    def randomize(self, randomized, position: int) -> None:
        """Re-draw layer ``position`` (0 = the top) of ``randomized`` as this cascade drew it the first time."""
        assert self.layers is not None
        module = randomized.submodule(self.layers[position].name)
        if position == len(self.draws):
            randomize(module, self.generator)
            self.draws.append({name: tensor.detach().clone() for name, tensor in _own_tensors(module)})
            return
        with torch.no_grad():
            for name, tensor in _own_tensors(module):
                tensor.copy_(self.draws[position][name])


class InitializerCascade:
    """The cascade for methods that read the model on onnxruntime only (``toolkit.perturbation``): the same
    top-down re-drawing, of the ONNX initializers of the conv and linear layers that feed the output, each step
    read through a fresh onnxruntime session. Same interface as ``RandomizedCascade``. ``reads`` names the nodes
    whose outputs the method reads (the model's first output when None): a method that reads attention weights is checked on
    the layers that feed them, not on a head it never reads."""

    def __init__(self, seed: int, reads: Callable[[Any], list[str]] | None = None):
        self.rng = np.random.default_rng(seed + 1)
        self.reads = reads
        self.layers: list | None = None
        self.draws: list[dict[str, np.ndarray]] = []

    def copy_of(self, model, image, objective):
        copied = onnx.ModelProto()
        copied.CopyFrom(model.onnx_model)
        if self.layers is None:
            self.layers = feeding_layers(model, self.reads(model) if self.reads else None)
        return dataclasses.replace(model, onnx_model=copied)

    def randomize(self, randomized, position: int) -> None:
        """Re-draw layer ``position`` (0 = the top) of ``randomized``'s graph as this cascade drew it the first time."""
        assert self.layers is not None
        graph = randomized.onnx_model.graph
        layer = self.layers[position]
        node = next(node for node in graph.node if node.name == layer.name)
        # the layer's weights may sit on the node before it (MatMul then Add, named by the Add)
        tensors = {tensor.name: tensor for tensor in graph.initializer if tensor.name in (*node.input[1:], layer.weight)}
        if position == len(self.draws):
            drawn = {}
            for name, tensor in tensors.items():
                values = numpy_helper.to_array(tensor)
                if values.dtype.kind == "f" and values.size > 1:
                    spread = float(values.astype(np.float64).std()) or 1e-2
                    drawn[name] = (self.rng.standard_normal(values.shape) * spread).astype(values.dtype)
            self.draws.append(drawn)
        for name, values in self.draws[position].items():
            tensors[name].CopyFrom(numpy_helper.from_array(values, name))
        randomized.graph_changed()


def feeding_layers(model, reads: list[str] | None = None) -> list:
    """The conv and linear layers with weights in the graph whose outputs reach ``reads`` (the nodes whose outputs
    a method reads; the model's first output when None), from there down (a detector's box branch does not reach a class
    score's output only when it is a separate output)."""
    graph = model.onnx_model.graph
    producers = {name: node for node in graph.node for name in node.output}
    nodes = {node.name: node for node in graph.node}
    reached, pending = set(), [tensor for name in reads for tensor in nodes[name].output] if reads else [graph.output[0].name]
    while pending:
        node = producers.get(pending.pop())
        if node is not None and node.name not in reached:
            reached.add(node.name)
            pending.extend(node.input)
    return [layer for layer in model.layers if layer.weight and layer.kind in ("conv", "linear") and layer.name in reached][::-1]


def reaching_layers(model, image, objective) -> list:
    """The conv and linear layers whose weights the objective depends on, from the output down. Layers that do
    not reach the target (a detector's box branch for a class score) are left out: randomizing them changes
    nothing, which would read as a failed check."""
    layers = [layer for layer in model.layers if layer.weight and layer.kind in ("conv", "linear")]
    parameters = [[p for p in model.submodule(layer.name).parameters(recurse=False) if p.is_floating_point()] for layer in layers]
    flat = [p for group in parameters for p in group]
    for parameter in flat:
        parameter.requires_grad_(True)
    try:
        with torch.enable_grad():
            gradients = torch.autograd.grad(objective.total(model.module(image)), flat, allow_unused=True)
    finally:
        for parameter in flat:
            parameter.requires_grad_(False)
    reached = {id(p) for p, g in zip(flat, gradients) if g is not None and bool(g.abs().sum() > 0)}
    return [layer for layer, group in zip(layers, parameters) if any(id(p) in reached for p in group)][::-1]


def cascading_randomization(
    technique,
    model,
    image,
    objective,
    params,
    original: np.ndarray,
    seed: int,
    check_cancelled,
    every_layer: bool = True,
    cascade: RandomizedCascade | None = None,
) -> SanityCheck:
    """Re-draw the top ``sanity_layers`` weight layers one after another (then all the rest) and compare the map
    of ``objective`` (already chosen on the original model) with ``original`` after each step. The verdict rests
    on the top layers; ``every_layer=False`` leaves out the last, shown-only step (all weight layers). ``cascade``
    shares the randomized models with other checks on the same image and target."""
    steps, correlations, maps = [], [], [original[0]]
    reason = why_degenerate(original[0])
    if reason is not None:
        verdict = (
            f"Sanity check cannot judge: the map is {reason}, so there is nothing to compare after "
            "randomizing the weights; this map cannot support a conclusion either way."
        )
        return SanityCheck([], [], np.stack(maps).astype(np.float32), verdict, None)
    cascade = cascade if cascade is not None else RandomizedCascade(seed)
    randomized = cascade.copy_of(model, image, objective)
    weight_layers = cascade.layers or []
    if not weight_layers:
        verdict = "Sanity check cannot judge: no conv or linear weights reach this target to randomize."
        return SanityCheck([], [], np.stack(maps).astype(np.float32), verdict, None)
    settings = {**params, "sanity_check": False}
    count = min(params.get("sanity_layers", 3), len(weight_layers))

    def measure(label: str) -> None:
        check_cancelled()
        values = technique.maps(randomized, image, objective, settings, seed)[0]
        steps.append(label)
        correlations.append(_correlation(original[0], values))
        maps.append(values)

    for position, layer in enumerate(weight_layers[:count]):
        cascade.randomize(randomized, position)
        measure(f"top {position + 1}: {layer.name}")
    if every_layer and len(weight_layers) > count:
        for position in range(count, len(weight_layers)):
            cascade.randomize(randomized, position)
        measure("all weight layers")
    judged = correlations[count - 1]  # after the top `count` layers: the bounded cascade the verdict rests on
    where = f"the top {count} weight layer{'s' if count > 1 else ''}"
    if np.isnan(judged):
        verdict = (
            f"Sanity check cannot judge: with {where} randomized the map becomes empty or constant, so no "
            "correlation can be measured; the randomized model passes no signal to the input for this target."
        )
        return SanityCheck(steps, correlations, np.stack(maps).astype(np.float32), verdict, None)
    passed = abs(judged) < PASS_BELOW
    if passed:
        verdict = f"Sanity check passed: with {where} randomized the map changes (Spearman rho {judged:.2f}), so it depends on what the model learned."
    else:
        verdict = (
            f"Sanity check FAILED: this map barely changes when {where} are destroyed (Spearman rho "
            f"{judged:.2f}); it would look the same for a model that learned nothing there (such maps often show "
            "the image's edges), so it does not show what the model learned."
        )
    return SanityCheck(steps, correlations, np.stack(maps).astype(np.float32), verdict, passed)


def cascade_passes(technique, model, images, objective, params, originals: np.ndarray, cascades: list, seed: int, check_cancelled) -> list[bool | None]:
    """The verdict of ``cascading_randomization`` (every_layer=False) for each of ``images``, its own ``cascades``
    entry giving its randomized models: True (passes), False (fails) or None (cannot judge). Only the map after the
    top ``sanity_layers`` are re-drawn decides, and re-drawing them together gives the very model the cascade
    reaches step by step, so that map is computed once per randomized model, for the whole batch (``originals`` are
    the maps of the same batch: SmoothGrad's noise depends on the batch, so both sides see the same noise). Images
    whose cascades re-draw the same layers (a classifier's pictures) share one randomized model."""
    verdicts: list[bool | None] = [None] * len(images)
    groups: dict[tuple, list[int]] = {}
    for index, cascade in enumerate(cascades):
        if why_degenerate(originals[index]) is not None:
            continue
        if cascade.layers is None:  # the first check on this image finds the layers that reach its target
            cascade.copy_of(model, images[index : index + 1], objective.take([index]))
        if cascade.layers:
            groups.setdefault(tuple(layer.name for layer in cascade.layers), []).append(index)
    settings = {**params, "sanity_check": False}
    for members in groups.values():
        check_cancelled()
        cascade = cascades[members[0]]
        randomized = cascade.copy_of(model, images[members[:1]], objective.take(members[:1]))
        for position in range(min(params.get("sanity_layers", 3), len(cascade.layers))):
            cascade.randomize(randomized, position)
        maps = technique.maps(randomized, images, objective, settings, seed)
        del randomized
        for index in members:
            rho = _correlation(originals[index], maps[index])
            verdicts[index] = None if np.isnan(rho) else bool(abs(rho) < PASS_BELOW)
    return verdicts


def _correlation(original: np.ndarray, randomized: np.ndarray) -> float:
    """Spearman's rho between a map and its map after randomization; NaN when the latter is empty or constant."""
    if why_degenerate(randomized) is not None:
        return float("nan")
    return float(stats.spearmanr(original.ravel(), randomized.ravel()).statistic)
