"""The model a job process keeps between jobs: a warm worker that runs the next technique of the same audit or
comparison on the same model reuses the loaded model (its torch graph, onnxruntime sessions and layer
extractors) instead of loading it again.

Techniques must leave a model as they found it; the memory does not trust them to. Each job is handed the
model only after its fingerprint (every module's type, modes, hooks and instance-level ``forward``, the fx
graph's code, the spec, and a digest of every parameter's and buffer's bytes, dtype and device) matches the
one taken when it was loaded; a model a technique changed is dropped, with every converted graph this process
holds, and loaded afresh from the conversion cache on disk, so no job ever sees another job's leftovers. The
ONNX graph (``LoadedModel.onnx_model``) is read-only by contract.
"""

from __future__ import annotations

import gc
import hashlib
import json
from collections.abc import Callable
from typing import Any

_kept: dict[str, Any] = {}  # key, model, fingerprint of the one model this process holds


def _tensor_digest(value) -> tuple:
    """dtype, device, shape and a digest of the bytes of one tensor (any dtype, bfloat16 included)."""
    import torch

    flat = value.detach().cpu().contiguous().view(-1)
    data = flat.view(torch.uint8).numpy() if flat.numel() else b""
    return str(value.dtype), str(value.device), tuple(value.shape), hashlib.blake2b(data, digest_size=16).hexdigest()


def fingerprint(model) -> tuple:
    """What a technique could leave behind on a loaded model: which modules, their hooks, modes and replaced
    ``forward``s, the fx graph's code, the spec, the gradient flags and bytes of every parameter and buffer."""
    import torch

    module = model.module
    if module is None:  # forward-only: the ONNX graph onnxruntime runs is what a job could have changed
        return hashlib.sha256(model.onnx_model.SerializeToString()).hexdigest(), repr(model.spec)
    structure = tuple(
        (
            name,
            type(child).__name__,
            child.training,
            len(child._forward_hooks),
            len(child._forward_pre_hooks),
            len(child._backward_hooks),
            len(getattr(child, "_backward_pre_hooks", ())),
            "forward" in vars(child),
        )
        for name, child in module.named_modules()
    )
    with torch.no_grad():
        parameters = tuple((name, value.requires_grad, *_tensor_digest(value)) for name, value in module.named_parameters())
        buffers = tuple((name, *_tensor_digest(value)) for name, value in module.named_buffers())
    return structure, getattr(module, "code", ""), repr(model.spec), parameters, buffers


def recall(sha256: str, name: str, spec_overrides: dict | None, load: Callable[[], Any]):
    """The model ``name`` (ONNX bytes ``sha256``, ``spec_overrides``): the one this process kept if it is the same
    and unchanged, else ``load()`` (which then replaces it)."""
    from viz_server.model import cache

    key = json.dumps([sha256, name, spec_overrides or {}], sort_keys=True, default=str)
    if _kept.get("key") == key:
        if fingerprint(_kept["model"]) == _kept["fingerprint"]:
            print(f"model {name}: kept in memory from this process's previous job", flush=True)
            return _kept["model"]
        print(f"model {name}: changed by the previous job, loaded again", flush=True)
    forget()  # the changed graph may also sit in the conversion cache's memory: load from disk, one model at a time
    model = load()
    _kept.update(key=key, model=model, fingerprint=fingerprint(model))
    cache.clear_memory()  # this process holds one model: the one kept here
    return model


def forget() -> None:
    """Drop the kept model and every converted graph this process holds."""
    from viz_server.model import cache

    _kept.clear()
    cache.clear_memory()
    gc.collect()
