"""Where the torch graph computes: the CPU, or a CUDA GPU when one is asked for (``--device``,
``VIZ_SERVER_DEVICE``) and present. Never required.

The graph is moved whole and wrapped in ``OnDevice``, which takes and returns tensors where the caller keeps them
(the CPU): every technique and the toolkit run unchanged, and only the network's own forward and backward passes
run on the GPU. Conversion, verification and onnxruntime's forward passes stay where they are.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from viz_server.config import SETTINGS, setting
from viz_server.errors import UserError

CHOICES = "cpu, cuda, cuda:N or auto (cuda when torch finds a GPU, else cpu)"


def resolve(name: str | None = None) -> torch.device:
    """The torch device ``name`` names (None: the ``VIZ_SERVER_DEVICE`` setting, cpu by default); one sentence when
    it names CUDA on a machine where torch finds none."""
    try:
        text = setting("VIZ_SERVER_DEVICE") if name is None else SETTINGS["VIZ_SERVER_DEVICE"].parse(name)
    except ValueError:
        raise UserError(f"the device {str(name).strip()[:40]!r} is not one of {CHOICES}.") from None
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(text)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"the device {text} was asked for, but torch finds no CUDA GPU on this machine; use cpu (or auto).")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise UserError(f"the device {text} was asked for, but torch finds {torch.cuda.device_count()} CUDA GPU(s) here.")
        torch.backends.cudnn.allow_tf32 = False  # TF32 convolutions drift from onnxruntime's float32 by about 1e-3
        torch.backends.cuda.matmul.allow_tf32 = False
    return device


class OnDevice(nn.Module):
    """A graph on ``device`` that takes and returns tensors on the caller's device (differentiably: gradients flow
    back across the copies)."""

    def __init__(self, graph: nn.Module, device: torch.device):
        super().__init__()
        self.graph, self.device = graph, device

    def forward(self, x: torch.Tensor):
        return _moved(self.graph(x.to(self.device)), x.device)


def _moved(value: Any, device: torch.device) -> Any:
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, (tuple, list)):
        return type(value)(_moved(item, device) for item in value)
    if isinstance(value, dict):
        return {key: _moved(item, device) for key, item in value.items()}
    return value


def on_device(graph: nn.Module, device: torch.device) -> nn.Module:
    """``graph`` itself on the CPU; elsewhere a copy moved there, in ``OnDevice`` (the original, which conversion
    caches and verifies, stays on the CPU)."""
    if device.type == "cpu":
        return graph
    return OnDevice(copy.deepcopy(graph).to(device), device)
