"""Where a converted graph first departs from onnxruntime: the layer a user and a maintainer should look at.

Every node's output is computed twice on the same input, by onnxruntime (the node outputs added as graph
outputs, graph optimizations off) and by the torch graph (forward hooks on each node's submodule), and the
nodes are compared in graph order. The first whose outputs differ beyond the tolerance is named with both
values at the place they differ most.
"""

from __future__ import annotations

import numpy as np
import onnx
import torch
from torch import nn

from viz_server.model.runtime import inner_graph, make_session


def _as_array(value) -> np.ndarray | None:
    if isinstance(value, (tuple, list)):
        value = value[0] if value else None
    if not isinstance(value, torch.Tensor):
        return None
    return value.detach().to(torch.float64).cpu().numpy()


def torch_node_outputs(graph: nn.Module, module_names: dict[str, str], batch: np.ndarray) -> dict[str, np.ndarray]:
    """ONNX node name -> its first output as the torch graph computes it for ``batch`` (``graph`` may be in its
    wrappers: hooks go on the graph inside, the batch goes through the wrapper)."""
    recorded: dict[str, np.ndarray] = {}
    handles = []
    inner = inner_graph(graph)
    for node_name, module_name in module_names.items():
        try:
            module = inner.get_submodule(module_name)
        except AttributeError:
            continue

        def hook(_module, _inputs, output, node_name=node_name):
            array = _as_array(output)
            if array is not None:
                recorded[node_name] = array

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            graph(torch.from_numpy(batch))
    finally:
        for handle in handles:
            handle.remove()
    return recorded


def onnx_node_outputs(model: onnx.ModelProto, batch: np.ndarray, input_name: str) -> dict[str, np.ndarray]:
    """ONNX node name -> its first output as onnxruntime computes it for ``batch`` (float outputs only)."""
    extended = onnx.ModelProto()
    extended.CopyFrom(model)
    typed = {value.name: value for value in extended.graph.value_info}
    existing = {value.name for value in extended.graph.output}
    wanted: dict[str, str] = {}
    for node in extended.graph.node:
        tensor = node.output[0] if node.output else ""
        info = typed.get(tensor)
        if not tensor or info is None or info.type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            continue
        wanted[tensor] = node.name
        if tensor not in existing:
            extended.graph.output.append(info)
    session = make_session(extended, exact=True)
    names = [output.name for output in session.get_outputs() if output.name in wanted]
    values = session.run(names, {input_name: batch})
    return {wanted[name]: np.asarray(value, dtype=np.float64) for name, value in zip(names, values)}


def first_divergence(
    model: onnx.ModelProto, graph: nn.Module, module_names: dict[str, str], batch: np.ndarray, input_name: str, tolerance: float
) -> str | None:
    """A sentence naming the first layer whose output differs between torch and onnxruntime, or None."""
    try:
        ours = torch_node_outputs(graph, module_names, batch)
        reference = onnx_node_outputs(model, batch, input_name)
    except Exception:  # noqa: BLE001 - locating the divergence is a courtesy; the refusal stands without it
        return None
    for node in model.graph.node:
        mine, theirs = ours.get(node.name), reference.get(node.name)
        if mine is None or theirs is None:
            continue
        if mine.shape != theirs.shape:
            return (
                f"the first layer that differs is '{node.name[:80]}' ({node.op_type}): torch gives shape {list(mine.shape)}, onnxruntime {list(theirs.shape)}"
            )
        if not theirs.size:
            continue
        difference = np.abs(mine - theirs)
        if not np.isfinite(difference).all():
            where = np.unravel_index(int(np.argmax(~np.isfinite(difference))), difference.shape)
        else:
            where = np.unravel_index(int(np.argmax(difference)), difference.shape)
            scale = max(float(np.max(np.abs(theirs))), 1e-6)
            if float(difference[where]) / scale <= tolerance:
                continue
        return (
            f"the first layer that differs is '{node.name[:80]}' ({node.op_type}): at index {list(map(int, where))} "
            f"torch gives {float(mine[where]):.6g} where onnxruntime gives {float(theirs[where]):.6g}"
        )
    return None
