"""Converted models cached by content: in memory for the life of the process, on disk across processes.

The disk entry (``$VIZ_SERVER_CACHE``, default ``~/.cache/viz-server/models``) holds the normalized ONNX graph
and the conversion report, so a second load of the same bytes skips guard, normalize and verify and only
rebuilds the torch modules. Its key is the model's SHA-256, the cache format and a fingerprint of the
installed plugins that take part in conversion (converters, model checks): installing one converts afresh.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import onnx
from torch import nn

from viz_server.config import setting
from viz_server.model.convert import convert
from viz_server.model.loaded import ConversionReport
from viz_server.plugins import fingerprint

CACHE_FORMAT = "7"
MEMORY_CACHE_SIZE = 8
CONVERSION_HOOKS = ("register_converters", "model_checks")


@dataclass
class Converted:
    """What the caches keep: everything that does not depend on the user's spec overrides."""

    onnx_model: onnx.ModelProto
    graph: nn.Module | None  # None: the model runs forward-only (``report.forward_only``)
    module_names: dict[str, str]
    report: ConversionReport
    metadata: dict[str, str]


_memory: OrderedDict[str, Converted] = OrderedDict()
_memory_lock = threading.Lock()


def default_cache_dir() -> Path:
    """``VIZ_SERVER_CACHE`` (see ``viz_server.config``)."""
    return setting("VIZ_SERVER_CACHE")


def cache_key(digest: str) -> str:
    """The model's hash plus a fingerprint of the plugins that take part in conversion."""
    return f"{digest}-v{CACHE_FORMAT}-{fingerprint(CONVERSION_HOOKS)}"


def clear_memory() -> None:
    """Forget the in-memory entries (as in a fresh process; tests and benchmarks use it)."""
    with _memory_lock:
        _memory.clear()


def lookup(key: str, cache_dir: Path) -> Converted | None:
    """The converted model from memory, else rebuilt from its disk entry, else None."""
    with _memory_lock:
        if key in _memory:
            _memory.move_to_end(key)
            return _memory[key]
    folder = cache_dir / key
    try:
        report_data = json.loads((folder / "report.json").read_text())
        onnx_model = onnx.load_from_string((folder / "normalized.onnx").read_bytes())
    except (OSError, ValueError):
        return None
    started = time.perf_counter()
    report = ConversionReport(**{k: v for k, v in report_data["conversion"].items() if k != "worst_rel_error"})
    graph, module_names = convert(onnx_model) if not report.forward_only else (None, {})
    report.from_cache = True
    report.seconds = {**report.seconds, "convert_cached": round(time.perf_counter() - started, 4)}
    converted = Converted(onnx_model, graph, module_names, report, report_data["metadata"])
    _keep_in_memory(key, converted)
    return converted


def remember(key: str, converted: Converted, cache_dir: Path) -> None:
    """Keep a fresh conversion in memory and on disk (an unwritable cache only costs speed)."""
    _keep_in_memory(key, converted)
    folder = cache_dir / key
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _write_atomically(folder / "normalized.onnx", converted.onnx_model.SerializeToString())
        payload = {"conversion": converted.report.to_json(), "metadata": converted.metadata}
        _write_atomically(folder / "report.json", json.dumps(payload).encode())
    except OSError:
        pass


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(data)
    temporary.replace(path)


def _keep_in_memory(key: str, converted: Converted) -> None:
    with _memory_lock:
        _memory[key] = converted
        while len(_memory) > MEMORY_CACHE_SIZE:
            _memory.popitem(last=False)


__all__ = ["CACHE_FORMAT", "Converted", "cache_key", "clear_memory", "default_cache_dir", "lookup", "remember"]
