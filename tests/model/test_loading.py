"""Caching, layer table, batch handling and the onnxruntime session of a LoadedModel."""

import time

import numpy as np
import torch
from model_zoo import export

from viz_server import load_model
from viz_server.model import cache


def test_second_load_comes_from_disk_cache(tmp_path):
    data = export("inception", "dynamo", 18)
    first = load_model(data, cache_dir=tmp_path)
    cache.clear_memory()  # force the disk path, as in a fresh process
    started = time.perf_counter()
    second = load_model(data, cache_dir=tmp_path)
    assert second.conversion.from_cache and not first.conversion.from_cache
    assert time.perf_counter() - started < 5
    batch = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(first.module(batch), second.module(batch))
    assert second.conversion.parity == first.conversion.parity


def test_layer_table_and_defaults(shapes_model):
    layers = shapes_model.layers
    cam = layers.get(layers.default_cam_layer)
    assert cam.spatial and cam.kind == "relu" and cam.output_shape[2:] == (8, 8)
    first = layers.get(layers.first_conv)
    assert first.op == "Conv" and first.weight
    assert shapes_model.submodule(cam.name) is not None


def test_relu_like_kinds_include_clip_zero():
    model = load_model(export("depthwise", "torchscript", 17))
    kinds = {layer.op: layer.kind for layer in model.layers}
    assert kinds["Clip"] == "relu" and kinds["HardSwish"] == "activation"


def test_predict_matches_module(shapes_model):
    batch = np.random.default_rng(0).standard_normal((5, 3, 64, 64)).astype(np.float32)
    np.testing.assert_allclose(shapes_model.predict(batch), shapes_model.module(torch.from_numpy(batch)).numpy(), rtol=1e-4, atol=1e-4)


def test_predict_layers_matches_the_torch_graph_and_reuses_its_session(shapes_model):
    layers = [layer.name for layer in shapes_model.layers if layer.spatial][:3]
    batch = np.random.default_rng(1).standard_normal((3, 3, 64, 64)).astype(np.float32)
    on_onnxruntime = shapes_model.predict_layers(batch, layers)
    on_torch = shapes_model.feature_extractor(layers)(torch.from_numpy(batch))
    for name in layers:
        np.testing.assert_allclose(on_onnxruntime[name], on_torch[name].detach().numpy(), rtol=1e-4, atol=1e-5)
    sessions = len(shapes_model._layer_sessions)
    shapes_model.predict_layers(batch[:1], layers)
    assert len(shapes_model._layer_sessions) == sessions


def test_feature_extractor_stops_at_the_deepest_layer_and_keeps_gradients(shapes_model):
    first, deepest = [layer.name for layer in shapes_model.layers if layer.kind == "relu"][:2]
    extractor = shapes_model.feature_extractor([first, deepest])
    graph_nodes = sum(1 for node in shapes_model.module.graph.nodes if node.op == "call_module")
    assert sum(1 for node in extractor.cut.graph.nodes if node.op == "call_module") < graph_nodes / 2

    inputs = torch.rand(2, 3, 64, 64, requires_grad=True)
    (cut_gradient,) = torch.autograd.grad(extractor(inputs)[deepest].sum(), inputs)
    captured = []
    handle = shapes_model.submodule(deepest).register_forward_hook(lambda _m, _i, output: captured.append(output))
    try:
        again = inputs.detach().clone().requires_grad_(True)
        shapes_model.module(again)
        (full_gradient,) = torch.autograd.grad(captured[0].sum(), again)
    finally:
        handle.remove()
    torch.testing.assert_close(cut_gradient, full_gradient)


def test_feature_extractor_runs_a_fixed_batch_graph_in_chunks():
    model = load_model(export("flatten_all", "torchscript", 17), use_cache=False)  # flattens the batch axis away
    assert model.max_batch == 1
    layer = next(layer.name for layer in model.layers if layer.spatial)
    batch = torch.rand(3, 3, 32, 32)
    outputs = model.feature_extractor([layer])(batch)[layer]
    assert outputs.shape[0] == 3
    np.testing.assert_allclose(outputs.detach().numpy(), model.predict_layers(batch.numpy(), [layer])[layer], rtol=1e-4, atol=1e-5)


def test_a_copy_with_another_graph_does_not_share_the_feature_extractors(shapes_model):
    """The sanity check randomizes a copy made with dataclasses.replace: its extractors must use its own weights."""
    import copy
    import dataclasses

    layer = shapes_model.layers.default_cam_layer
    batch = torch.rand(1, 3, 64, 64)
    original = shapes_model.feature_extractor([layer])(batch)[layer]
    twin = dataclasses.replace(shapes_model, module=copy.deepcopy(shapes_model.module))
    with torch.no_grad():
        for parameter in twin.module.parameters():
            parameter.mul_(-1.0)
    assert twin.feature_extractor([layer]) is not shapes_model.feature_extractor([layer])
    assert not torch.allclose(twin.feature_extractor([layer])(batch)[layer], original)
