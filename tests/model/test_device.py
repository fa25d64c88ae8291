"""Where the torch graph computes (``--device``, ``VIZ_SERVER_DEVICE``): the CPU by default, a CUDA GPU when asked
for and present, never required. The graph is wrapped in ``OnDevice``, which takes and returns tensors on the
caller's device; the tests below run that wrapper on the CPU (every code path but the copy to a GPU), and the
``cuda`` tests run the techniques on a real GPU where torch finds one."""

import copy
import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch
from pictures import png_bytes

from viz_server.errors import UserError
from viz_server.model.device import OnDevice, resolve
from viz_server.runner import run_technique

CUDA = torch.cuda.is_available()


def cuda(test):
    """Marked ``cuda`` (``pytest -m cuda``) and skipped where torch finds no GPU."""
    return pytest.mark.cuda(pytest.mark.skipif(not CUDA, reason="torch finds no CUDA GPU on this machine")(test))


# techniques that read the graph in every way there is: input gradients, a layer's activations and gradients
# (hooks), the graph cut after a layer (feature extractor), ReLU rules, randomized copies (sanity check)
THROUGH_THE_GRAPH = ("saliency", "gradcam", "guided_backprop", "integrated_gradients", "activation_maps", "neuron_gradient")


def test_the_default_device_is_the_cpu(monkeypatch):
    monkeypatch.delenv("VIZ_SERVER_DEVICE", raising=False)
    assert resolve() == torch.device("cpu")
    assert resolve("auto") == torch.device("cuda" if CUDA else "cpu")


@pytest.mark.parametrize("name", ["tpu", "cuda:x", "", "gpu"])
def test_a_device_that_is_not_one_is_refused_in_one_sentence(monkeypatch, name):
    monkeypatch.setenv("VIZ_SERVER_DEVICE", name or "nonsense")
    with pytest.raises(UserError, match="VIZ_SERVER_DEVICE"):
        resolve()
    if name:
        with pytest.raises(UserError, match="is not one of cpu, cuda"):
            resolve(name)


@pytest.mark.skipif(CUDA, reason="this machine has a GPU")
def test_asking_for_a_gpu_where_there_is_none_is_one_sentence_and_exit_2(tmp_path):
    with pytest.raises(UserError, match="finds no CUDA GPU on this machine"):
        resolve("cuda")
    done = subprocess.run(
        [sys.executable, "-m", "viz_server", "run", "saliency", "shapes_cnn", "--device", "cuda", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().count("\n") == 0 and "finds no CUDA GPU" in done.stderr
    assert not any(tmp_path.iterdir())


def _wrapped(model, device: torch.device):
    """The model with its graph in ``OnDevice`` (as ``load_model`` leaves it on a GPU), on ``device``."""
    return dataclasses.replace(model, module=OnDevice(copy.deepcopy(model.module).to(device), device))


def _same_results(first, second, tolerance: float) -> None:
    assert first.arrays.keys() == second.arrays.keys()
    for key, value in first.arrays.items():
        other = second.arrays[key]
        assert value.shape == other.shape, key
        if np.issubdtype(np.asarray(value).dtype, np.floating):
            scale = max(float(np.abs(value).max()), 1e-12)
            assert np.abs(np.asarray(value, np.float64) - other).max() <= tolerance * scale, key
        else:
            assert np.array_equal(value, other), key
    assert first.caveats == second.caveats


@pytest.mark.parametrize("technique", THROUGH_THE_GRAPH)
def test_the_wrapped_graph_gives_the_same_results_on_the_cpu(shapes_model, shape_pictures, technique):
    """The wrapper itself (moving inputs in and outputs back, hooks and cut graphs inside it) changes nothing."""
    images = [(name, data) for name, data, _label, _mask in shape_pictures]
    wrapped = _wrapped(shapes_model, torch.device("cpu"))
    assert wrapped.device == torch.device("cpu") and wrapped.torch_graph() is wrapped.module.graph
    _same_results(run_technique(technique, shapes_model, images), run_technique(technique, wrapped, images), 1e-6)


def test_the_wrapped_graph_gives_the_same_attention_maps(shape_pictures):
    """A transformer's attention and its gradients, captured by hooks inside the wrapper."""
    from viz_server import load_model
    from viz_server_models import shipped_models

    model = load_model(shipped_models()["shapes_vit"])
    images = [(name, data) for name, data, _label, _mask in shape_pictures[:2]]
    wrapped = _wrapped(model, torch.device("cpu"))
    _same_results(run_technique("transformer_attribution", model, images), run_technique("transformer_attribution", wrapped, images), 1e-6)


def test_a_wrapped_graph_whose_parity_is_read_inside_it_is_checked_as_before(tmp_path, shape_pictures):
    """A sigmoid head: parity compares the logits, read by a hook inside the wrapped graph, before every run."""
    import onnx
    from onnx import helper

    from viz_server import load_model
    from viz_server_models import shipped_models

    graph = onnx.load(str(shipped_models()["shapes_cnn"]))
    output = graph.graph.output[0]
    graph.graph.node.append(helper.make_node("Sigmoid", [output.name], ["probabilities"], name="head_sigmoid"))
    output.name = "probabilities"
    path = tmp_path / "sigmoid_head.onnx"
    onnx.save(graph, str(path))
    model = load_model(str(path))
    images = [(name, data) for name, data, _label, _mask in shape_pictures[:2]]
    _same_results(run_technique("saliency", model, images), run_technique("saliency", _wrapped(model, torch.device("cpu")), images), 1e-6)


def test_outputs_come_back_where_the_inputs_were_and_gradients_flow_through(shapes_model):
    wrapped = _wrapped(shapes_model, torch.device("cpu"))
    images = torch.rand(2, *shapes_model.spec.input_shape, requires_grad=True)
    wrapped.module(images).sum().backward()
    direct = images.grad.clone()
    images.grad = None
    shapes_model.module(images).sum().backward()
    assert torch.allclose(direct, images.grad)
    layer = [layer.name for layer in shapes_model.layers][1]
    outputs = wrapped.feature_extractor([layer])(images.detach())
    expected = shapes_model.feature_extractor([layer])(images.detach())
    assert outputs.keys() == expected.keys() == {layer}
    assert torch.allclose(outputs[layer], expected[layer])


@cuda
def test_the_graph_computes_on_the_gpu_when_asked(monkeypatch):
    from viz_server import load_model
    from viz_server_models import shipped_models

    monkeypatch.setenv("VIZ_SERVER_DEVICE", "cuda")
    model = load_model(shipped_models()["shapes_cnn"])
    assert model.device.type == "cuda"
    assert next(model.torch_graph().parameters()).device.type == "cuda"
    outputs = model.module(torch.rand(2, *model.spec.input_shape))
    assert outputs.device.type == "cpu"


@cuda
@pytest.mark.parametrize("technique", (*THROUGH_THE_GRAPH, "guided_gradcam", "deconvnet", "attribution_ranking"))
def test_every_technique_on_the_gpu_agrees_with_the_cpu(shapes_model, shape_pictures, technique):
    images = [(name, data) for name, data, _label, _mask in shape_pictures]
    masks = [png_bytes((mask * 255).astype(np.uint8)) for _name, _data, _label, mask in shape_pictures]
    on_gpu = _wrapped(shapes_model, torch.device("cuda"))
    params = {"methods": "saliency,gradcam"} if technique == "attribution_ranking" else {}
    _same_results(run_technique(technique, shapes_model, images, params, masks=masks), run_technique(technique, on_gpu, images, params, masks=masks), 1e-3)
