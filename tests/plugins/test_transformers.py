"""Transformers explained without a ``reshape_transform``: the layer table finds a transformer's tokens on their
image grid from the shapes and the input size (ViT and DeiT: N x (class tokens + h*w) x D; Swin's stages:
N x h x w x C), and Grad-CAM runs on them with default parameters, at the layer pytorch-grad-cam's users pick by
hand (a ViT's last block's first norm: the tokens after it reach the head only through the class token). The map
at that layer equals one computed on the native timm module with the reshape users write."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import skimage.data
import torch
from pictures import png_bytes

from benchmarks.common import export_native
from viz_server import load_model
from viz_server.errors import UserError
from viz_server.model.images import decode_image
from viz_server.runner import run_technique
from viz_server.testing import objective_for
from viz_server_plugins.toolkit.cam import class_activation_map

sys.path.insert(0, str(Path(__file__).parents[1] / "model"))
timm = pytest.importorskip("timm")
pytestmark = pytest.mark.slow  # exports of timm transformers

# (timm name, exporter, opset, grid, leading tokens, the layer chosen by default)
CASES = [
    ("vit_tiny_patch16_224", "torchscript", 17, (14, 14), 1, "/blocks/blocks.11/norm1/LayerNormalization"),
    ("vit_tiny_patch16_224", "dynamo", 18, (14, 14), 1, None),
    ("deit_tiny_distilled_patch16_224", "torchscript", 17, (14, 14), 2, "/blocks/blocks.11/norm1/LayerNormalization"),
    ("swin_tiny_patch4_window7_224", "torchscript", 17, (7, 7), 0, "/norm/LayerNormalization"),
]


@pytest.fixture(scope="module", params=CASES, ids=[f"{name}-{exporter}{opset}" for name, exporter, opset, *_ in CASES])
def transformer(request):
    from test_real_corpus import export

    name, exporter, opset, grid, leading, layer = request.param
    torch.manual_seed(0)
    return load_model(export(name, exporter, opset), name=name), request.param


def test_the_token_grid_is_found_and_grad_cam_runs_with_defaults(transformer, shape_pictures):
    model, (name, _exporter, _opset, grid, leading, expected_layer) = transformer
    tokens = [layer for layer in model.layers if layer.tokens]
    assert tokens and [model.layers.get(name).grid for name in model.layers.cam_candidates[:3]] == [grid] * 3, [
        (n, model.layers.get(n).grid) for n in model.layers.cam_candidates[:3]
    ]
    assert [model.layers.get(name).leading_tokens for name in model.layers.cam_candidates[:3]] == [leading] * 3
    pictures = [(file, data) for file, data, _, _ in shape_pictures[:2]]
    result = run_technique("gradcam", model, pictures, {"sanity_check": False})
    chosen = next(caveat for caveat in result.caveats if caveat.startswith("The map is taken at layer"))
    assert f"{grid[0]} x {grid[1]} tokens" in chosen
    if expected_layer:
        assert chosen.startswith(f"The map is taken at layer {expected_layer} ")
    maps = result.arrays["gradcam"]
    assert maps.shape == (2, 224, 224) and all(values.max() > 0 for values in maps)


def test_the_map_at_the_token_layer_equals_the_native_modules_with_a_hand_written_reshape(shape_pictures):
    """As a pytorch-grad-cam user computes it on the timm module (``reshape_transform``: drop the class token, lay
    14 x 14 tokens on the grid), against ours on the exported graph with nothing said about tokens."""
    from test_real_corpus import build

    torch.manual_seed(0)
    native, _shape = build("vit_tiny_patch16_224")
    native.eval()
    model = load_model(export_native(native, 224), name="vit")
    images = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    with torch.no_grad():
        targets = native(images).argmax(1)
    captured = {}
    handle = native.blocks[-1].norm1.register_forward_hook(lambda _m, _i, output: captured.update(tokens=output))
    try:
        scores = native(images.clone())
        gradients = torch.autograd.grad(scores[torch.arange(len(images)), targets].sum(), captured["tokens"])[0]
    finally:
        handle.remove()

    def reshape_transform(values):  # pytorch-grad-cam's README, for ViT
        return values[:, 1:, :].reshape(len(values), 14, 14, values.shape[2]).permute(0, 3, 1, 2)

    activations, gradients = reshape_transform(captured["tokens"].detach()), reshape_transform(gradients)
    reference = torch.relu((gradients.mean(dim=(2, 3))[:, :, None, None] * activations).sum(1))
    mine = class_activation_map(model, images, objective_for(model, classes=targets), "/blocks/blocks.11/norm1/LayerNormalization")
    error = float((mine - reference).abs().max() / reference.abs().max())
    assert error <= 1e-4, error


def test_a_cnn_has_no_token_layers(shapes_model):
    assert not any(layer.tokens for layer in shapes_model.layers)
    assert shapes_model.layers.get(shapes_model.layers.default_cam_layer).spatial


# ---- attention rollout and transformer attribution ------------------------------------------------------------


@pytest.fixture(scope="module")
def vit_pair():
    """A timm ViT with attention computed explicitly (so its weights can be hooked) and its export."""
    from test_real_corpus import build

    torch.manual_seed(0)
    native, _shape = build("vit_tiny_patch16_224")
    native.eval()
    for block in native.blocks:
        block.attn.fused_attn = False
    return native, load_model(export_native(native, 224), name="vit")


def native_attention(native, images, targets=None):
    """Each block's attention probabilities on the native module (and their gradients for ``targets``)."""
    captured = []
    handles = [block.attn.attn_drop.register_forward_hook(lambda _m, _i, output: captured.append(output)) for block in native.blocks]
    try:
        with torch.enable_grad():
            scores = native(images.clone())
            gradients = torch.autograd.grad(scores[torch.arange(len(images)), targets].sum(), captured) if targets is not None else None
    finally:
        for handle in handles:
            handle.remove()
    return [values.detach() for values in captured], gradients


def test_attention_rollout_reads_the_graphs_attention_as_the_native_module_computes_it(vit_pair, shape_pictures):
    from viz_server_plugins.toolkit import attention

    native, model = vit_pair
    images = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    weights, _ = native_attention(native, images)
    flow = torch.eye(197).repeat(len(images), 1, 1).double()
    for values in weights:  # Abnar & Zuidema as vit-explain writes it
        mixed = 0.5 * values.double().mean(1) + 0.5 * torch.eye(197)
        flow = (mixed / mixed.sum(-1, keepdim=True)) @ flow
    reference = flow[:, 0, 1:].reshape(len(images), 14, 14).numpy()
    layers = attention.attention_layers(model)
    assert len(layers.names) == 12 and layers.grid == (14, 14) and layers.leading == 1
    read = model.predict_layers(images.numpy(), list(layers.names))
    mine = attention.rollout([read[name] for name in layers.names], layers)
    assert float(np.abs(mine - reference).max() / np.abs(reference).max()) <= 1e-4


def test_transformer_attribution_matches_chefers_relevance_on_the_native_module(vit_pair, shape_pictures):
    from viz_server_plugins.toolkit import attention

    native, model = vit_pair
    images = torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data, _, _ in shape_pictures]))
    with torch.no_grad():
        targets = native(images).argmax(1)
    weights, gradients = native_attention(native, images, targets)
    relevance = torch.eye(197).repeat(len(images), 1, 1).double()
    for values, gradient in zip(weights, gradients):
        relevance = relevance + (gradient.double() * values.double()).clamp(min=0).mean(1) @ relevance
    reference = relevance[:, 0, 1:].reshape(len(images), 14, 14).numpy()
    layers = attention.attention_layers(model)
    mine = attention.gradient_weighted(*attention.captured_attention(model, images, objective_for(model, classes=targets), layers), layers)
    assert float(np.abs(mine - reference).max() / np.abs(reference).max()) <= 1e-4


@pytest.mark.parametrize("name", ["attention_rollout", "transformer_attribution"])
def test_attention_methods_run_with_defaults_and_their_sanity_check(vit_pair, shape_pictures, name):
    _native, model = vit_pair
    result = run_technique(name, model, [(file, data) for file, data, _, _ in shape_pictures[:2]])
    assert result.arrays[name].shape == (2, 224, 224) and all(values.max() > 0 for values in result.arrays[name])
    assert result.metrics["sanity_check"]["steps"]


def test_attention_methods_run_with_defaults_on_each_export_or_name_why_not(transformer, shape_pictures):
    """ViT (both exporters) and DeiT (two leading tokens): rollout and transformer attribution with defaults;
    Swin: its windowed attention is named, not followed."""
    model, (name, *_rest) = transformer
    pictures = [(file, data) for file, data, _, _ in shape_pictures[:1]]
    for technique in ("attention_rollout", "transformer_attribution"):
        if name.startswith("swin"):
            with pytest.raises(UserError, match="windowed attention"):
                run_technique(technique, model, pictures)
            continue
        result = run_technique(technique, model, pictures)
        assert result.arrays[technique].shape == (1, 224, 224) and result.arrays[technique].max() > 0, (name, technique)
        assert result.metrics["sanity_check"]["steps"], (name, technique)


def test_on_the_shipped_vit_the_ranking_names_a_method_that_localizes_better_than_the_model_free_maps():
    """The trained shapes ViT, 24 fresh pictures with their object masks, the transformer methods beside the
    forward-only ones: a trusted method localizes the object better than a centre Gaussian (and the edges), paired
    over the pictures. Measured: RISE 3.32 (95% CI 2.83-3.81) times a uniform map's energy, centre 1.91, edges 2.40."""
    from pictures import shapes_with_masks

    from viz_server_models import shipped_models

    model = load_model(shipped_models()["shapes_vit"], name="shapes_vit")
    images, masks = shapes_with_masks(24, seed=7)
    params = {"methods": "rise,occlusion,transformer_attribution,gradcam", "smooth_samples": 0, "sanity_images": 1, "sensitivity_samples": 2}
    result = run_technique("attribution_ranking", model, images, params, masks=masks)
    by_label = {row["method"]: row for row in result.metrics["ranking"]}
    assert {"Transformer attribution", "Grad-CAM", "RISE (250 masks)"} <= set(by_label)
    (sentence,) = [sentence for sentence in result.metrics["verdict"] if "localize" in sentence]
    named = sentence.split(" localize")[0]
    assert named in by_label and by_label[named]["sanity_check"] == "passed", sentence
    assert " localizes best " in sentence or "better than centre Gaussian" in sentence, sentence
    centre = by_label["centre Gaussian"]["energy_ratio"]
    assert by_label[named]["energy_ratio"] > centre, (by_label[named], centre)


def test_torchvision_vit_b_16_is_explained_with_defaults():
    """torchvision's ViT-B/16 (random weights; its zero-initialized head re-drawn so the classes differ), exported
    with the torchscript exporter: its tokens, attention (nn.MultiheadAttention written out by the exporter) and
    the three transformer methods with default parameters."""
    import torchvision

    torch.manual_seed(0)
    native = torchvision.models.vit_b_16(weights=None).eval()
    torch.nn.init.normal_(native.heads.head.weight, std=0.02)
    model = load_model(export_native(native, 224), name="vit_b_16")
    assert model.layers.get(model.layers.default_cam_layer).grid == (14, 14)
    pictures = [(f"{name}.png", png_bytes(getattr(skimage.data, name)())) for name in ("astronaut", "chelsea")]
    steps = {}
    for name in ("gradcam", "attention_rollout", "transformer_attribution"):
        result = run_technique(name, model, pictures)
        maps = result.arrays[name]
        assert maps.shape == (2, 224, 224) and all(values.max() > 0 for values in maps), name
        steps[name] = result.metrics["sanity_check"]["steps"]
    assert steps["gradcam"][0] == "top 1: /heads/head/Gemm", steps
    assert steps["attention_rollout"][0].startswith("top 1: /encoder/layers/encoder_layer_11/self_attention/"), steps  # what the rollout reads, not the head


def test_activation_maps_and_neuron_methods_read_token_layers_on_their_grid(shape_pictures):
    """On the shipped ViT with default parameters: the activation maps are the tokens laid on their 8 x 8 grid
    (class token left out), a unit's ROW,COLUMN is a grid cell and its channel an embedding dimension."""
    from viz_server_models import shipped_models
    from viz_server_plugins.toolkit.layers import layer_output

    model = load_model(shipped_models()["shapes_vit"], name="shapes_vit")
    pictures = [(file, data) for file, data, _, _ in shape_pictures[:2]]
    result = run_technique("activation_maps", model, pictures)
    layer = result.metrics["layer"]
    assert model.layer(layer).tokens == "sequence" and result.arrays["activations"].shape == (2, 64, 8, 8)
    tokens = layer_output(model, torch.from_numpy(model.spec.preprocess([decode_image(data) for _, data in pictures])), layer).numpy()
    assert np.array_equal(result.arrays["activations"][1, 5, 2, 3], tokens[1, 1 + 2 * 8 + 3, 5])
    unit = run_technique("neuron_gradient", model, pictures, {"channel": 5, "position": "2,3", "smooth_samples": 0})
    assert np.allclose(unit.metrics["activation"], tokens[:, 1 + 2 * 8 + 3, 5], atol=1e-4)
    assert any(artifact.group == "most activating patches" for artifact in unit.artifacts)
    with pytest.raises(UserError, match="outside layer"):
        run_technique("neuron_gradient", model, pictures, {"channel": 5, "position": "8,0", "smooth_samples": 0})
