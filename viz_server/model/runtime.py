"""How the model runs outside its torch graph: onnxruntime sessions, fixed-batch graphs, and the thread budget.

Every onnxruntime session viz-server opens comes from ``make_session``. A job process states its share of the
cores once, with ``use_threads`` (``viz_server.jobs.threads`` decides it): torch takes it at once, and every
session opened afterwards takes it too (intra-op; inter-op 1).
"""

from __future__ import annotations

from typing import Any

import onnx
import torch
from torch import nn

from viz_server.errors import UserError
from viz_server.model.device import OnDevice

_session_threads: int | None = None


def use_threads(count: int) -> None:
    """Run torch and every onnxruntime session opened from now on with ``count`` intra-op threads (inter-op 1)."""
    global _session_threads
    _session_threads = count
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only possible before torch's first parallel work; the intra-op setting is what matters
        pass


def session_threads() -> int | None:
    """The intra-op thread count sessions use, when this process has set one (None: onnxruntime's default)."""
    return _session_threads


def make_session(model: onnx.ModelProto, *, exact: bool = False):
    """An onnxruntime session; ``exact`` runs every node as written, on the CPU (no graph optimizations: no
    fused kernels, no integer kernels for quantize/dequantize pairs), the reference verification compares with."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise UserError('onnxruntime is not installed; install viz-server with it: pip install "viz-server[cpu]" (or "[gpu]").') from None

    available = ort.get_available_providers()
    providers = ["CPUExecutionProvider"] if exact else [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    options.log_severity_level = 4  # errors surface as exceptions, turned into one sentence
    if _session_threads:  # a job process's share of the cores
        options.intra_op_num_threads = _session_threads
        options.inter_op_num_threads = 1
    if exact:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        return ort.InferenceSession(model.SerializeToString(), options, providers=providers)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise UserError(f"onnxruntime cannot run this model ({str(exc).splitlines()[0][:200]}); re-export it.") from None


class FixedBatch(nn.Module):
    """Runs a graph that only accepts batches of exactly ``size`` on any batch, ``size`` images at a time.

    The graph may return one tensor or a tuple of them (a graph cut after several layers)."""

    def __init__(self, graph: nn.Module, size: int):
        super().__init__()
        self.graph, self.size = graph, size

    def forward(self, x: torch.Tensor):
        chunks: list[Any] = []
        for chunk in x.split(self.size):
            count = chunk.shape[0]
            if count < self.size:  # pad the last chunk by repeating its final image
                chunk = torch.cat([chunk, chunk[-1:].expand(self.size - count, *chunk.shape[1:])])
            output = self.graph(chunk)
            chunks.append([part[:count] for part in output] if isinstance(output, tuple) else output[:count])
        if isinstance(chunks[0], list):
            return tuple(torch.cat(parts) for parts in zip(*chunks))
        return torch.cat(chunks)


def inner_graph(module: nn.Module) -> nn.Module:
    """The converted graph itself, out of its ``FixedBatch`` and ``OnDevice`` wrappers (attach hooks here; run the
    wrapper, which takes the caller's tensors)."""
    while isinstance(module, (FixedBatch, OnDevice)):
        module = module.graph
    return module
