"""Resize (every version and attribute) and Upsample, as exact separable sampling.

For each resized axis the output position's source coordinate follows ONNX's ``coordinate_transformation_mode``
(half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric, tf_crop_and_resize with its
``roi`` and ``extrapolation_value``); the mode (nearest with its ``nearest_mode``, linear, cubic with
``cubic_coeff_a`` and ``exclude_outside``, ``antialias`` for both) gives each output a few source positions
(clamped to the input, as ONNX's edge padding) and their weights. The torch module gathers those positions and
sums them with the weights, one axis at a time: exactly ONNX's reference arithmetic, differentiable, and as
fast as the taps are few. Output sizes follow ``scales`` or ``sizes`` with ``axes`` and
``keep_aspect_ratio_policy``. Plans are built per input shape, so variable-size models resize correctly.

Resize-10 and Upsample use onnxruntime's "simple" nearest rounding (floor when enlarging, ceil when shrinking)
and asymmetric coordinates, which is what those older ops mean.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult
from torch import nn

COORDINATE_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric", "tf_crop_and_resize")
NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


@dataclass(frozen=True)
class ResizeMode:
    mode: str = "nearest"  # nearest | linear | cubic
    coordinates: str = "half_pixel"
    nearest: str = "round_prefer_floor"
    cubic_a: float = -0.75
    exclude_outside: bool = False
    extrapolation_value: float = 0.0
    antialias: bool = False
    keep_aspect_ratio: str = "stretch"
    axes: tuple[int, ...] | None = None


def _source_coordinates(mode: ResizeMode, out: int, size: int, scale: float, roi: tuple[float, float] | None):
    """ONNX's source coordinate of every output position along one axis, and which fall outside a crop."""
    y = np.arange(out, dtype=np.float64)
    length = scale * size
    outside = None
    if mode.coordinates == "align_corners":
        x = np.zeros(out) if length == 1 else y * (size - 1) / (length - 1)
    elif mode.coordinates == "asymmetric":
        x = y / scale
    elif mode.coordinates == "tf_crop_and_resize":
        start, end = roi if roi is not None else (0.0, 1.0)
        x = np.full(out, (end - start) * (size - 1) / 2) if length == 1 else y * (end - start) * (size - 1) / (length - 1)
        x = x + start * (size - 1)
        outside = (x < 0) | (x > size - 1)
    elif mode.coordinates == "pytorch_half_pixel":
        x = np.full(out, -0.5) if length == 1 else (y + 0.5) / scale - 0.5
    elif mode.coordinates == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / length)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        x = (y + 0.5) / scale - 0.5
    return x, outside


def _weights(mode: ResizeMode, ratio: np.ndarray, scale: float) -> np.ndarray:
    """Per output position, the weights of its taps (rows), as ONNX's reference computes them."""
    if mode.mode == "nearest":
        integer = ratio == 1
        chosen = {
            "round_prefer_floor": ratio > 0.5,
            "round_prefer_ceil": ratio >= 0.5,
            "floor": np.zeros_like(ratio, dtype=bool),
            "ceil": np.ones_like(ratio, dtype=bool),
            "simple": np.full(ratio.shape, scale < 1),
        }[mode.nearest] | integer
        return np.stack([~chosen, chosen], axis=1).astype(np.float64)
    if mode.antialias and scale < 1:
        if mode.mode == "linear":
            start = int(np.floor(-1 / scale) + 1)
            offsets = np.arange(start, 2 - start)
            taps = np.clip(1 - np.abs((offsets[None, :] - ratio[:, None]) * scale), 0, 1)
        else:
            start = int(np.floor(-2 / scale) + 1)
            offsets = np.arange(start, 2 - start)
            taps = _cubic_kernel(np.abs(scale * (offsets[None, :] - ratio[:, None])), mode.cubic_a)
        return taps / taps.sum(axis=1, keepdims=True)
    if mode.mode == "linear":
        return np.stack([1 - ratio, ratio], axis=1)
    distances = np.stack([1 + ratio, ratio, 1 - ratio, 2 - ratio], axis=1)
    return _cubic_kernel(distances, mode.cubic_a)


def _cubic_kernel(distance: np.ndarray, a: float) -> np.ndarray:
    near = ((a + 2) * distance - (a + 3)) * distance * distance + 1
    far = ((a * distance - 5 * a) * distance + 8 * a) * distance - 4 * a
    return np.where(distance <= 1, near, np.where(distance < 2, far, 0.0))


def axis_plan(mode: ResizeMode, size: int, out: int, scale: float, roi: tuple[float, float] | None):
    """(source indices, weights, positions outside a crop or None) resizing one axis from ``size`` to ``out``."""
    x, outside = _source_coordinates(mode, out, size, scale, roi)
    floor = np.floor(x)
    ratio = np.where(x == floor, 1.0, x - floor)
    weights = _weights(mode, ratio, scale)
    taps = weights.shape[1]
    pad = math.ceil(taps / 2)
    padded = x + pad
    base = np.floor(padded)
    fraction = padded - base
    if taps % 2 == 0:
        offset = np.where(fraction == 0, -(taps // 2), -(taps // 2) + 1)
    else:
        offset = np.where(fraction <= 0.5, -((taps - 1) // 2), -((taps - 1) // 2) + 1)
    indices = (base + offset).astype(np.int64)[:, None] + np.arange(taps)[None, :] - pad
    if mode.exclude_outside:
        weights = np.where((indices < 0) | (indices >= size), 0.0, weights)
        total = weights.sum(axis=1, keepdims=True)
        weights = weights / np.where(total == 0, 1.0, total)
    return np.clip(indices, 0, size - 1), weights, outside


def output_geometry(mode: ResizeMode, shape: tuple[int, ...], scales: list[float] | None, sizes: list[int] | None):
    """Per axis of the input: (scale, output size), after ``axes`` and ``keep_aspect_ratio_policy``."""
    rank = len(shape)
    axes = [a % rank for a in mode.axes] if mode.axes else list(range(rank))
    if sizes is not None:
        full_sizes = list(shape)
        for axis, size in zip(axes, sizes):
            full_sizes[axis] = int(size)
        full_scales = [full_sizes[i] / shape[i] if shape[i] else 1.0 for i in range(rank)]
        if mode.keep_aspect_ratio != "stretch":
            pick = min if mode.keep_aspect_ratio == "not_larger" else max
            scale = pick(full_scales[axis] for axis in axes)
            full_scales = [scale if i in axes else 1.0 for i in range(rank)]
            full_sizes = [int(scale * shape[i] + 0.5) if i in axes else shape[i] for i in range(rank)]
        return list(zip(full_scales, full_sizes))
    if scales is None:
        raise ValueError("Resize needs scales or sizes")
    full = [1.0] * rank
    for axis, scale in zip(axes, scales):
        full[axis] = float(scale)
    return [(full[i], int(full[i] * shape[i])) for i in range(rank)]


class Resize(nn.Module, OnnxToTorchModule):
    """ONNX Resize/Upsample as per-axis gathers and weighted sums. Arguments after the data are the node's roi,
    scales and sizes inputs that are present (constant or computed)."""

    def __init__(self, mode: ResizeMode, present: tuple[str, ...], scales: list[float] | None = None):
        super().__init__()
        self.mode, self.present, self.fixed_scales = mode, present, scales
        self._plans: dict = {}

    def forward(self, x: torch.Tensor, *inputs: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.present, inputs))
        roi = _values(given.get("roi"))
        scales = _values(given.get("scales")) or self.fixed_scales
        sizes = _values(given.get("sizes"))
        sizes = [int(v) for v in sizes] if sizes else None
        if sizes is None and not scales:
            raise ValueError("Resize needs scales or sizes")
        key = (tuple(x.shape), tuple(roi or ()), tuple(scales or ()) if sizes is None else None, tuple(sizes or ()))
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= 64:  # a variable-size model seen at many sizes: keep memory bounded
                self._plans.clear()
            with torch.inference_mode(False):  # cached tensors must serve later passes that record gradients
                plan = self._plans[key] = self._plan(tuple(x.shape), roi, None if sizes else scales, sizes)
        for axis, indices, weights, outside in plan:
            x = _resample_axis(x, axis, indices, weights, outside, self.mode.extrapolation_value)
        return x

    def _plan(self, shape, roi, scales, sizes):
        rank = len(shape)
        geometry = output_geometry(self.mode, shape, scales, sizes)
        full_roi = _full_roi(roi, rank, self.mode.axes) if self.mode.coordinates == "tf_crop_and_resize" else None
        plan = []
        for axis, (scale, out) in enumerate(geometry):
            window = None if full_roi is None else (full_roi[axis], full_roi[rank + axis])
            if math.isclose(scale, 1.0) and out == shape[axis] and (window is None or window == (0.0, 1.0)):
                continue
            indices, weights, outside = axis_plan(self.mode, shape[axis], out, scale, window)
            mask = None if outside is None or not outside.any() else torch.from_numpy(outside)
            if self.mode.mode == "nearest":  # one tap of weight 1: a plain gather
                plan.append((axis, torch.from_numpy(np.where(weights[:, 1] > 0, indices[:, 1], indices[:, 0])), None, mask))
            else:
                plan.append((axis, torch.from_numpy(indices), torch.from_numpy(weights), mask))
        return plan


def _resample_axis(x: torch.Tensor, axis: int, indices: torch.Tensor, weights: torch.Tensor | None, outside, fill: float) -> torch.Tensor:
    moved = x.movedim(axis, -1)
    indices = indices.to(x.device)
    if weights is None:
        result = moved[..., indices]
    else:
        result = (moved[..., indices] * weights.to(x.device, x.dtype)).sum(-1)
    if outside is not None:
        result = result.masked_fill(outside.to(result.device), fill)
    return result.movedim(-1, axis)


def _values(tensor: torch.Tensor | None) -> list[float] | None:
    if tensor is None or tensor.numel() == 0:
        return None
    return [float(v) for v in tensor.reshape(-1).tolist()]


def _full_roi(roi: list[float] | None, rank: int, axes: tuple[int, ...] | None) -> list[float]:
    full = [0.0] * rank + [1.0] * rank
    if roi is None:
        return full
    axes_list = [a % rank for a in axes] if axes else list(range(rank))
    count = len(axes_list)
    for i, axis in enumerate(axes_list):
        full[axis], full[rank + axis] = roi[i], roi[count + i]
    return full


def _mode_of(node: OnnxNode, version: int) -> ResizeMode:
    attrs = node.attributes
    mode = attrs.get("mode", "nearest")
    if mode not in ("nearest", "linear", "cubic") or (version < 11 and mode == "cubic"):
        raise NotImplementedError(f"{node.operation_type} mode {mode!r} is not supported")
    if version < 11:  # Upsample and Resize-10: asymmetric coordinates, onnxruntime's simple nearest rounding
        return ResizeMode(mode=mode, coordinates="asymmetric", nearest="simple")
    coordinates = attrs.get("coordinate_transformation_mode", "half_pixel")
    if coordinates == "tf_half_pixel_for_nn":
        raise NotImplementedError("Resize with coordinate_transformation_mode tf_half_pixel_for_nn is not supported")
    if coordinates not in COORDINATE_MODES:
        raise NotImplementedError(f"Resize with coordinate_transformation_mode {coordinates!r} is not supported")
    nearest = attrs.get("nearest_mode", "round_prefer_floor")
    if nearest not in NEAREST_MODES[:4]:
        raise NotImplementedError(f"Resize with nearest_mode {nearest!r} is not supported")
    policy = attrs.get("keep_aspect_ratio_policy", "stretch")
    if policy not in ("stretch", "not_larger", "not_smaller"):
        raise NotImplementedError(f"Resize with keep_aspect_ratio_policy {policy!r} is not supported")
    return ResizeMode(
        mode=mode,
        coordinates=coordinates,
        nearest=nearest,
        cubic_a=float(attrs.get("cubic_coeff_a", -0.75)),
        exclude_outside=bool(attrs.get("exclude_outside", 0)),
        extrapolation_value=float(attrs.get("extrapolation_value", 0.0)),
        antialias=bool(attrs.get("antialias", 0)),
        keep_aspect_ratio=policy,
        axes=tuple(attrs["axes"]) if attrs.get("axes") else None,
    )


def _resize(node: OnnxNode, version: int, names: tuple[str, ...]) -> OperationConverterResult:
    inputs = (list(node.input_values) + [""] * len(names))[: len(names) + 1]
    present = tuple(name for name, value in zip(names, inputs[1:]) if value)
    module = Resize(_mode_of(node, version), present)
    used = [inputs[0]] + [value for value in inputs[1:] if value]
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=tuple(used), outputs=node.output_values[:1]))


def convert_resize_10(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _resize(node, 10, ("scales",))


def convert_resize(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _resize(node, 11, ("roi", "scales", "sizes"))


def convert_upsample_7(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = Resize(_mode_of(node, 7), (), scales=list(node.attributes["scales"]))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=node.input_values[:1], outputs=node.output_values[:1]))


def convert_upsample_9(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    return _resize(node, 9, ("scales",))


class GridSample(nn.Module, OnnxToTorchModule):
    """ONNX GridSample on 4-D inputs (5-D without cubic): ``F.grid_sample`` implements the same modes, padding
    modes and corners."""

    def __init__(self, mode: str, padding: str, align_corners: bool):
        super().__init__()
        self.mode, self.padding, self.align_corners = mode, padding, align_corners

    def forward(self, x: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
        if x.dim() not in (4, 5) or (x.dim() == 5 and self.mode == "bicubic"):
            raise ValueError(f"GridSample is converted for 4-D inputs (and 5-D ones without cubic mode), not {x.dim()}-D {self.mode}")
        return torch.nn.functional.grid_sample(x, grid.to(x.dtype), mode=self.mode, padding_mode=self.padding, align_corners=self.align_corners)


def convert_grid_sample(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    attrs = node.attributes
    mode = {"linear": "bilinear", "cubic": "bicubic"}.get(attrs.get("mode", "bilinear"), attrs.get("mode", "bilinear"))
    padding = attrs.get("padding_mode", "zeros")
    if mode not in ("bilinear", "nearest", "bicubic") or padding not in ("zeros", "border", "reflection"):
        raise NotImplementedError(f"GridSample with mode {mode!r} and padding_mode {padding!r} is not supported")
    module = GridSample(mode, padding, bool(attrs.get("align_corners", 0)))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(inputs=node.input_values[:2], outputs=node.output_values[:1]))
