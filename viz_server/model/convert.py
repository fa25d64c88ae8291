"""Stage 3: normalized ONNX -> a frozen, eval-mode torch graph (onnx2torch plus registered converters).

Converters come from the ``register_converters`` hook (the built-in converter plugin registers ours the same
way a third-party plugin would) and from the core's own table for the nodes ``normalize`` fuses. For each
node the converter is chosen by op type, domain and schema version: the plugin converter with the highest
``since`` that covers the version (on a tie, the plugin pluggy calls first), else onnx2torch's own. onnx2torch's
registry is only read, never written.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache

import onnx
import onnx2torch
import torch
from onnx import defs
from onnx2torch import converter as onnx2torch_converter
from onnx2torch.node_converters.registry import get_converter as onnx2torch_converter_for

from viz_server.errors import UserError
from viz_server.model import fused_ops
from viz_server.model.normalize import FUSED_DOMAIN, opset_version
from viz_server.plugins import collected, plugin_manager


@dataclass(frozen=True)
class Converter:
    """Converts one ONNX op to a torch module, for schema versions ``since`` .. ``until`` (None: every later one).

    ``function(node, graph)`` has onnx2torch's converter signature (``onnx2torch.onnx_node.OnnxNode``,
    ``onnx2torch.onnx_graph.OnnxGraph``) and returns an ``onnx2torch.utils.common.OperationConverterResult``.
    Raise ``NotImplementedError`` naming the attribute for a mode it cannot reproduce: the model is then
    refused with that sentence rather than converted wrongly.
    """

    op_type: str
    since: int
    function: Callable
    domain: str = ""
    until: int | None = None

    def covers(self, op_type: str, domain: str, version: int) -> bool:
        return self.op_type == op_type and self.domain == domain and self.since <= version and (self.until is None or version <= self.until)


CORE_CONVERTERS = (
    Converter("Gelu", 1, fused_ops.convert_gelu, FUSED_DOMAIN),
    Converter("Silu", 1, fused_ops.convert_silu, FUSED_DOMAIN),
    Converter("Linear", 1, fused_ops.convert_fused_linear, FUSED_DOMAIN),
)
"""Converters for the nodes ``normalize`` writes into its own domain."""


@cache
def schema_versions(op_type: str, domain: str = "") -> list[int]:
    """Every version in which an op's ONNX schema changed, oldest first."""
    return sorted({schema.since_version for schema in defs.get_all_schemas_with_history() if schema.name == op_type and schema.domain == domain})


def _schema_version(op_type: str, opset: int, domain: str) -> int:
    """The version of the op's schema in force at ``opset`` (what converters are keyed by)."""
    try:
        return defs.get_schema(op_type, max_inclusive_version=opset, domain=domain).since_version
    except (RuntimeError, defs.SchemaError):
        return opset


_table_lock = threading.Lock()
_table: tuple[tuple, tuple[Converter, ...]] | None = None


def registered_converters() -> tuple[Converter, ...]:
    """Every plugin's converters in pluggy's call order (last registered and ``tryfirst`` first), then the core's;
    rebuilt when those plugins change."""
    global _table
    implementations = tuple((impl.plugin_name, id(impl.plugin)) for impl in plugin_manager().hook.register_converters.get_hookimpls())
    with _table_lock:
        if _table is None or _table[0] != implementations:
            plugged = tuple(converter for _plugin, converter in collected("register_converters", Converter))
            _table = (implementations, plugged + CORE_CONVERTERS)
        return _table[1]


def find_converter(op_type: str, opset: int, domain: str = ""):
    """The converter function for a node, or raise ``NotImplementedError`` naming the op and version."""
    domain = "" if domain == onnx.defs.ONNX_DOMAIN else domain
    version = _schema_version(op_type, opset, domain)
    chosen = None
    for candidate in registered_converters():
        if candidate.covers(op_type, domain, version) and (chosen is None or candidate.since > chosen.since):
            chosen = candidate
    if chosen is not None:
        return chosen.function
    return onnx2torch_converter_for(op_type, version, domain or onnx.defs.ONNX_DOMAIN)


_convert_lock = threading.Lock()


@contextmanager
def _our_lookup(model: onnx.ModelProto):
    """During one conversion, onnx2torch finds converters through ``find_converter``, and skips its own shape
    inference when ``normalize`` already ran it (half of a cached load)."""
    with _convert_lock:
        original_lookup, original_inference = onnx2torch_converter.get_converter, onnx2torch_converter.safe_shape_inference
        onnx2torch_converter.get_converter = lambda operation_type, version, domain=onnx.defs.ONNX_DOMAIN: find_converter(operation_type, version, domain)
        if len(model.graph.value_info):
            onnx2torch_converter.safe_shape_inference = lambda proto: proto
        initializers = [(cls, cls.reset_parameters) for cls in WEIGHTED_MODULES]
        for cls, _ in initializers:  # the ONNX weights replace them at once: skip drawing random ones (a third of a cached load)
            cls.reset_parameters = _keep_parameters  # type: ignore[method-assign,assignment]
        try:
            yield
        finally:
            onnx2torch_converter.get_converter, onnx2torch_converter.safe_shape_inference = original_lookup, original_inference
            for cls, method in initializers:
                cls.reset_parameters = method  # type: ignore[method-assign]


WEIGHTED_MODULES = (torch.nn.modules.conv._ConvNd, torch.nn.Linear)
"""Modules onnx2torch builds and then fills with the model's weights."""


def _keep_parameters(module: torch.nn.Module) -> None:
    """``reset_parameters`` while converting: the parameters are allocated and about to be overwritten."""


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types (with version) that no converter handles, in graph order."""
    missing: list[str] = []
    for node in model.graph.node:
        version = opset_version(model, node.domain)
        try:
            find_converter(node.op_type, version, node.domain)
        except NotImplementedError:
            label = f"{node.domain + '.' if node.domain not in ('', 'ai.onnx') else ''}{node.op_type} (opset {version})"
            if label not in missing:
                missing.append(label)
    return missing


QUANTIZED_OP_MARKS = ("Quantize", "QLinear", "Integer", "QGemm", "QAttention", "QOrdered")
"""Parts of op names that mark quantized arithmetic (the standard ones convert; contrib ones such as
com.microsoft.QLinearAdd do not)."""


def quantized_ops(model: onnx.ModelProto) -> list[str]:
    """Op types of the graph that compute on quantized integers."""
    return sorted({node.op_type for node in model.graph.node if any(mark in node.op_type for mark in QUANTIZED_OP_MARKS)})


def convert(model: onnx.ModelProto) -> tuple[torch.fx.GraphModule, dict[str, str]]:
    """Convert to torch; return the module and a map ONNX node name -> torch submodule name."""
    missing = unsupported_ops(model)
    quantized = [label for label in missing if any(mark in label for mark in QUANTIZED_OP_MARKS)]
    if quantized:
        raise UserError(
            f"the model uses quantized ops viz-server cannot convert ({', '.join(quantized[:3])}); export it in QDQ format "
            "(QuantizeLinear/DequantizeLinear pairs, e.g. onnxruntime.quantization with QuantFormat.QDQ) or analyse the float model it was quantized from."
        )
    if missing:
        raise UserError(
            f"the model uses {', '.join(missing[:5])}, which viz-server cannot convert to a differentiable graph yet; "
            "re-export it with standard ops (e.g. a different opset) or without that layer."
        )
    try:
        with _our_lookup(model):
            module = onnx2torch.convert(model)
    except NotImplementedError as exc:
        raise UserError(f"the model cannot be converted: {exc}; re-export it with standard ops.") from None
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise UserError(f"the model cannot be converted ({type(exc).__name__}: {str(exc)[:200]}); re-export it.") from None
    module.eval()
    module.requires_grad_(False)
    module_names = [node.target for node in module.graph.nodes if node.op == "call_module"]
    node_names = [node.name for node in model.graph.node]
    return module, dict(zip(node_names, module_names))
