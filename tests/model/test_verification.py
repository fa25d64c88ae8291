"""Verified as used: parity holds per spec (size, layout, range, normalization), on the run's own images, on the
scores before a final squashing op; a failure names the first layer where torch and onnxruntime part."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import onnx
import pytest
import torch
import torch.nn.functional as F
from onnx import helper, numpy_helper
from onnx2torch.utils.common import OnnxToTorchModule, OperationConverterResult
from task_models import export_task_model

from viz_server import hookimpl, load_model, plugins
from viz_server.errors import UserError
from viz_server.model.convert import Converter
from viz_server.model.images import decode_image
from viz_server.model.verify import check_inputs
from viz_server.runner import run_technique
from viz_server_models import shipped_models


class MaxPoolWrongWhenWide(torch.nn.Module, OnnxToTorchModule):
    """A converter bug that only shows at some sizes: average pooling once the input is wider than 40 columns."""

    def forward(self, x):
        return F.avg_pool2d(x, 2) if x.shape[-1] > 40 else F.max_pool2d(x, 2)


class BuggyPlugin:
    @hookimpl
    def register_converters(self):
        def convert(node, graph):
            from onnx2torch.utils.common import OnnxMapping

            return OperationConverterResult(torch_module=MaxPoolWrongWhenWide(), onnx_mapping=OnnxMapping(node.input_values[:1], node.output_values))

        return [Converter("MaxPool", 1, convert)]


@pytest.fixture
def buggy_maxpool():
    plugins.plugin_manager().register(BuggyPlugin(), name="buggy_maxpool")
    yield
    plugins.reset_plugin_manager()


def test_a_spec_change_is_verified_again_and_a_size_bug_is_caught_naming_the_layer(buggy_maxpool, tmp_path):
    data = export_task_model("variable_size")  # any H x W; exported at 32 x 64
    small = load_model(data, cache_dir=tmp_path, image_size="32,32")
    assert len(small.conversion.verified) == 1 and small.conversion.worst_rel_error < 1e-5
    with pytest.raises(UserError) as caught:
        load_model(data, cache_dir=tmp_path, image_size="48,96")  # from the cache: only the spec changed
    message = str(caught.value)
    assert message.startswith("at the spec in use (48x96") and "the first layer that differs is '" in message and "(MaxPool)" in message
    assert "\n" not in message


def test_each_spec_is_verified_once_and_recorded(tmp_path):
    from viz_server.model import cache

    cache.clear_memory()  # as in a fresh process: other tests' loads at other specs are not this one's
    data = shipped_models()["shapes_cnn"].read_bytes()
    first = load_model(data, cache_dir=tmp_path)
    other = load_model(data, cache_dir=tmp_path, mean="0.4,0.4,0.4", std="0.2,0.2,0.2")
    again = load_model(data, cache_dir=tmp_path, mean="0.4,0.4,0.4", std="0.2,0.2,0.2")
    assert len(first.conversion.verified) >= 1 and len(other.conversion.verified) == 2 and again.conversion.verified == other.conversion.verified
    for checks in other.conversion.verified.values():
        probes = " ".join(check["probe"] for check in checks)
        assert all(check["max_rel_error"] < 1e-5 for check in checks) and "picture" in probes and "noise" in probes


def test_a_run_checks_its_own_images_and_names_the_first_diverging_layer(shapes_model, shape_pictures):
    broken_graph = copy.deepcopy(shapes_model.module)
    conv = next(layer for layer in shapes_model.layers if layer.kind == "conv" and layer.weight)
    with torch.no_grad():
        next(broken_graph.get_submodule(conv.module_name).parameters()).mul_(1.5)
    broken = dataclasses.replace(shapes_model, module=broken_graph)
    batch = shapes_model.spec.preprocess([decode_image(shape_pictures[0][1])])
    check_inputs(shapes_model, batch)  # the real graph holds on the run's images
    with pytest.raises(UserError, match=rf"the first layer that differs is '{conv.name}' \(Conv\)"):
        check_inputs(broken, batch)
    with pytest.raises(UserError, match="differs from onnxruntime"):
        run_technique("saliency", broken, [(shape_pictures[0][0], shape_pictures[0][1])])


def test_a_saturated_sigmoid_is_compared_on_its_logits():
    """Scores squashed to about 1e-13 would inflate any relative error; parity is measured before the Sigmoid."""
    model = onnx.load(str(shipped_models()["shapes_cnn"]))
    graph = model.graph
    output = graph.output[0]
    graph.initializer.append(numpy_helper.from_array(np.array(30.0, np.float32), "offset"))
    for node in graph.node:
        node.output[:] = [output.name + "__logits" if name == output.name else name for name in node.output]
    graph.node.extend(
        [
            helper.make_node("Sub", [output.name + "__logits", "offset"], [output.name + "__shifted"], name="shift"),
            helper.make_node("Sigmoid", [output.name + "__shifted"], [output.name], name="squash"),
        ]
    )
    loaded = load_model(model.SerializeToString(), use_cache=False)
    assert loaded.parity_probe.tensor == output.name + "__shifted"  # the logits, not the squashed scores
    assert loaded.conversion.worst_rel_error < 1e-5 and not loaded.conversion.warnings
