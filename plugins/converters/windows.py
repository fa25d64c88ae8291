"""Sliding-window geometry as ONNX defines it for Conv and the pools: output sizes and the padding that realizes
``auto_pad`` (SAME_UPPER, SAME_LOWER, VALID), explicit ``pads`` of any size and ``ceil_mode``.

Everything is resolved per spatial axis from the input's actual size, so a variable-size model gets the padding
its input needs at run time. The result is a begin and end padding for each axis after which a window operation
with no padding of its own gives ONNX's output exactly (an end padding may be negative: the input is cropped).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from onnx2torch.onnx_node import OnnxNode


@dataclass(frozen=True)
class Window:
    kernel: tuple[int, ...]
    strides: tuple[int, ...]
    dilations: tuple[int, ...]
    pads: tuple[int, ...]  # ONNX order: every begin, then every end
    auto_pad: str = "NOTSET"
    ceil_mode: bool = False

    @classmethod
    def of(cls, node: OnnxNode, kernel: list[int] | tuple[int, ...] | None = None) -> Window:
        """The window a Conv or pool node describes (``kernel`` for a Conv whose kernel comes from its weights)."""
        attrs = node.attributes
        kernel = tuple(attrs.get("kernel_shape") or kernel or ())
        if not kernel:
            raise NotImplementedError(f"{node.operation_type} without a kernel_shape is not supported")
        rank = len(kernel)
        auto_pad = attrs.get("auto_pad", "NOTSET") or "NOTSET"
        if auto_pad not in ("NOTSET", "VALID", "SAME_UPPER", "SAME_LOWER"):
            raise NotImplementedError(f"{node.operation_type} with auto_pad {auto_pad!r} is not supported")
        return cls(
            kernel=kernel,
            strides=tuple(attrs.get("strides") or [1] * rank),
            dilations=tuple(attrs.get("dilations") or [1] * rank),
            pads=tuple(attrs.get("pads") or [0] * (2 * rank)),
            auto_pad=auto_pad,
            ceil_mode=bool(attrs.get("ceil_mode", 0)),
        )

    @property
    def rank(self) -> int:
        return len(self.kernel)

    def extent(self, axis: int) -> int:
        """The span one window covers along an axis (the dilated kernel)."""
        return (self.kernel[axis] - 1) * self.dilations[axis] + 1

    def explicit_pads(self, axis: int, size: int) -> tuple[int, int]:
        """The ONNX padding (begin, end) of one axis for an input of ``size``."""
        if self.auto_pad == "VALID":
            return 0, 0
        if self.auto_pad.startswith("SAME"):
            out = math.ceil(size / self.strides[axis])
            total = max((out - 1) * self.strides[axis] + self.extent(axis) - size, 0)
            small, large = total // 2, total - total // 2
            return (small, large) if self.auto_pad == "SAME_UPPER" else (large, small)
        return self.pads[axis], self.pads[self.rank + axis]

    def output_size(self, axis: int, size: int) -> int:
        begin, end = self.explicit_pads(axis, size)
        if self.auto_pad.startswith("SAME"):
            return math.ceil(size / self.strides[axis])
        span = size + begin + end - self.extent(axis)
        if span < 0:
            raise ValueError(f"the window ({self.extent(axis)}) is larger than the padded input ({size + begin + end})")
        if not self.ceil_mode:
            return span // self.strides[axis] + 1
        out = -(-span // self.strides[axis]) + 1
        if (out - 1) * self.strides[axis] >= size + begin:  # the last window must start inside the input or its begin padding
            out -= 1
        return out

    def padding(self, spatial: tuple[int, ...]) -> list[tuple[int, int, int]]:
        """Per axis: (begin, end, end of the ONNX padding): pad by ``begin`` and ``end`` (``end`` may be negative or
        reach past the ONNX padding, for ceil_mode) and a window op without padding yields ONNX's output."""
        result = []
        for axis, size in enumerate(spatial):
            begin, onnx_end = self.explicit_pads(axis, size)
            needed = (self.output_size(axis, size) - 1) * self.strides[axis] + self.extent(axis)
            result.append((begin, needed - size - begin, onnx_end))
        return result


def torch_pad_list(pairs: list[tuple[int, int]]) -> list[int]:
    """``F.pad``'s argument (last axis first) from (begin, end) pairs in axis order."""
    flat: list[int] = []
    for begin, end in reversed(pairs):
        flat += [begin, end]
    return flat
