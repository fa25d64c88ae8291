"""Every zoo network, from both exporters at several opsets, converts with parity and a usable gradient."""

import numpy as np
import pytest
import torch
from model_zoo import EXPORTS, ZOO, build, example_input, export, paddle_style

from viz_server import load_model

CASES = [(name, exporter, opset) for name in ZOO for exporter, opset in EXPORTS]


@pytest.mark.parametrize("name,exporter,opset", CASES, ids=[f"{n}-{e}{o}" for n, e, o in CASES])
def test_converts_with_parity_and_gradient(name, exporter, opset):
    model = load_model(export(name, exporter, opset), use_cache=False)
    assert model.conversion.worst_rel_error <= 1e-4, model.conversion.to_json()
    assert model.conversion.gradient_norm > 0

    # the converted module reproduces the original torch network (pre-softmax where the net ends in softmax)
    batch = torch.cat([example_input(name) for _ in range(3)])
    ours = model.module(batch)
    reference = torch.cat([build(name)(image[None]) for image in batch])  # per image: fixed_batch takes only 1
    if name in ("softmax_head", "nhwc_keras"):
        ours = torch.softmax(ours, dim=1)
    assert ours.shape == reference.shape
    np.testing.assert_allclose(ours.detach().numpy(), reference.detach().numpy(), rtol=1e-4, atol=1e-5)

    # the input gradient flows and is finite
    inputs = batch.clone().requires_grad_(True)
    model.module(inputs)[:, 0].sum().backward()
    assert torch.isfinite(inputs.grad).all() and inputs.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["residual", "depthwise", "softmax_head"])
def test_paddle_style_constant_weights_convert(name):
    model = load_model(paddle_style(export(name, "torchscript", 13)), use_cache=False)
    assert any("folded" in note for note in model.conversion.passes)
    assert model.conversion.worst_rel_error <= 1e-4


def test_softmax_is_stripped_and_recorded():
    model = load_model(export("softmax_head", "torchscript", 17), use_cache=False)
    assert any("Softmax" in note for note in model.conversion.passes)
    scores = model.module(example_input("softmax_head"))
    assert not torch.allclose(scores.sum(1), torch.ones(1))  # logits, not probabilities


@pytest.mark.parametrize("name,per_image", [("fixed_batch", False), ("flatten_all", True)])
def test_fixed_batch_export_still_takes_batches(name, per_image):
    model = load_model(export(name, "torchscript", 17), use_cache=False)
    assert (model.max_batch == 1) == per_image, model.conversion.passes
    batch = torch.rand(3, 3, 32, 32)
    out = model.module(batch)
    assert out.shape == (3, 3)
    single = torch.cat([model.module(batch[i : i + 1]) for i in range(3)])
    torch.testing.assert_close(out, single, rtol=1e-5, atol=1e-6)
    assert model.predict(batch.numpy()).shape == (3, 3)


def test_nhwc_export_gets_nhwc_spec_in_0_255():
    model = load_model(export("nhwc_keras", "torchscript", 17), use_cache=False)
    assert model.spec.layout == "NHWC"
    assert model.spec.value_range == (0.0, 255.0)
    assert "layout" in model.spec.guessed


def test_fixed_batch_of_four_runs_in_padded_groups():
    import contextlib
    import io

    from torch import nn

    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(0), nn.Unflatten(0, (4, -1)), nn.Linear(4 * 6 * 6, 2)).eval()
    buffer = io.BytesIO()
    with contextlib.redirect_stdout(io.StringIO()):
        torch.onnx.export(net, (torch.rand(4, 3, 8, 8),), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    model = load_model(buffer.getvalue(), use_cache=False)
    assert model.max_batch == 4
    batch = torch.rand(5, 3, 8, 8)
    expected = torch.cat([net(batch[:4]), net(torch.cat([batch[4:], batch[4:].expand(3, 3, 8, 8)]))[:1]])
    torch.testing.assert_close(model.module(batch), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(batch.numpy()), expected.detach().numpy(), rtol=1e-4, atol=1e-5)
