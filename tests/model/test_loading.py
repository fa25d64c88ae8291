"""Caching, layer table, batch handling and the onnxruntime session of a LoadedModel."""

import time

import numpy as np
import torch

from model_zoo import export
from viz_server import load_model
from viz_server.model import loaded


def test_second_load_comes_from_disk_cache(tmp_path):
    data = export("inception", "dynamo", 18)
    first = load_model(data, cache_dir=tmp_path)
    loaded._memory.clear()  # force the disk path, as in a fresh process
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
