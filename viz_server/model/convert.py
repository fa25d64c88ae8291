"""Stage 3: normalized ONNX -> a frozen, eval-mode torch graph (onnx2torch plus our converters)."""

from __future__ import annotations

import threading
from contextlib import contextmanager

import onnx
import onnx2torch
import torch
from onnx2torch import converter as onnx2torch_converter
from onnx2torch.node_converters import registry

from viz_server.errors import UserError
from viz_server.model import converters
from viz_server.model.normalize import opset_version


_convert_lock = threading.Lock()


@contextmanager
def _shapes_already_inferred(model: onnx.ModelProto):
    """Skip onnx2torch's own shape inference when ``normalize`` already ran it (half of a cached load)."""
    if not len(model.graph.value_info):
        yield
        return
    with _convert_lock:
        original = onnx2torch_converter.safe_shape_inference
        onnx2torch_converter.safe_shape_inference = lambda proto: proto
        try:
            yield
        finally:
            onnx2torch_converter.safe_shape_inference = original


def unsupported_ops(model: onnx.ModelProto) -> list[str]:
    """Op types (with version) that no registered converter handles, in graph order."""
    converters.register()
    missing: list[str] = []
    for node in model.graph.node:
        version = opset_version(model, node.domain)
        try:
            registry.get_converter(node.op_type, version, node.domain or onnx.defs.ONNX_DOMAIN)
        except NotImplementedError:
            label = f"{node.domain + '.' if node.domain not in ('', 'ai.onnx') else ''}{node.op_type} (opset {version})"
            if label not in missing:
                missing.append(label)
    return missing


QUANTIZED_OPS = frozenset(
    {"DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul"}
)


def convert(model: onnx.ModelProto) -> tuple[torch.fx.GraphModule, dict[str, str]]:
    """Convert to torch; return the module and a map ONNX node name -> torch submodule name."""
    missing = unsupported_ops(model)
    quantized = [label for label in missing if label.split(" ")[0] in QUANTIZED_OPS]
    if quantized:
        raise UserError(
            f"the model is quantized ({', '.join(quantized[:3])}) and integer arithmetic has no useful gradient; "
            "analyse the float model it was quantized from."
        )
    if missing:
        raise UserError(
            f"the model uses {', '.join(missing[:5])}, which viz-server cannot convert to a differentiable graph yet; "
            "re-export it with standard ops (e.g. a different opset) or without that layer."
        )
    try:
        with _shapes_already_inferred(model):
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
