"""The model a job process keeps between jobs: a warm worker that runs the next technique of the same audit or
comparison on the same model reuses the loaded model (its torch graph, onnxruntime sessions and layer
extractors) instead of loading it again.

Techniques must leave a model as they found it; the memory does not trust them to. Each job is handed the
model only after a fingerprint check (its modules, hooks, modes, gradient flags and weights as loaded); a model
a technique changed is dropped and loaded afresh from the conversion cache, so no job ever sees another job's
leftovers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

_kept: dict[str, Any] = {}  # key, model, fingerprint of the one model this process holds


def fingerprint(module) -> tuple:
    """What a technique could leave behind on a torch module: which modules, their hooks and modes, the
    parameters' gradient flags and a checksum of their values."""
    import torch

    structure = tuple(
        (
            name,
            type(child).__name__,
            child.training,
            len(child._forward_hooks),
            len(child._forward_pre_hooks),
            len(child._backward_hooks),
            len(getattr(child, "_backward_pre_hooks", ())),
        )
        for name, child in module.named_modules()
    )
    with torch.no_grad():
        parameters = tuple((name, value.requires_grad, float(value.double().sum())) for name, value in module.named_parameters())
        buffers = tuple((name, float(value.double().sum())) for name, value in module.named_buffers() if value.is_floating_point())
    return structure, parameters, buffers


def recall(sha256: str, name: str, spec_overrides: dict | None, load: Callable[[], Any]):
    """The model ``name`` (ONNX bytes ``sha256``, ``spec_overrides``): the one this process kept if it is the same
    and unchanged, else ``load()`` (which then replaces it)."""
    key = json.dumps([sha256, name, spec_overrides or {}], sort_keys=True, default=str)
    if _kept.get("key") == key:
        if fingerprint(_kept["model"].module) == _kept["fingerprint"]:
            print(f"model {name}: kept in memory from this process's previous job", flush=True)
            return _kept["model"]
        print(f"model {name}: changed by the previous job, loaded again", flush=True)
    _kept.clear()  # drop the old model before loading the next: one model in memory at a time
    model = load()
    _kept.update(key=key, model=model, fingerprint=fingerprint(model.module))
    return model


def forget() -> None:
    _kept.clear()
