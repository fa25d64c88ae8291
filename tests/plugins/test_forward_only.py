"""Models without a torch graph run forward-only on onnxruntime, and the methods that need only forward passes
explain them: occlusion and RISE, with a sanity check that re-draws the ONNX initializers. Occlusion and
Integrated Gradients equal Captum's on a torchvision export."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pictures import png_bytes
from task_models import with_loop

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.installed import techniques
from viz_server.model.images import decode_image
from viz_server.runner import run_technique
from viz_server.techniques import validate_params
from viz_server.testing import objective_for
from viz_server_models import shipped_models
from viz_server_plugins.integrated_gradients import IntegratedGradients
from viz_server_plugins.occlusion import Occlusion, starts
from viz_server_plugins.toolkit import sanity


@pytest.fixture(scope="module")
def looped():
    return load_model(with_loop(shipped_models()["shapes_cnn"].read_bytes()), name="shapes_loop")


def pictures(shape_pictures):
    return [(name, data) for name, data, _, _ in shape_pictures]


def test_a_model_with_a_loop_is_kept_forward_only_with_the_same_scores(looped, shapes_model, shape_pictures):
    assert looped.module is None and "control-flow op Loop (node 'passes')" in looped.forward_only
    batch = shapes_model.spec.preprocess([decode_image(data) for _, data in pictures(shape_pictures)])
    assert np.array_equal(looped.predict(batch), shapes_model.predict(batch))
    assert any("runs forward-only on onnxruntime" in caveat for caveat in looped.conversion.caveats)
    assert [layer.name for layer in sanity.feeding_layers(looped)][:2] == ["/classifier/Gemm", "/features/features.12/Conv"]


@pytest.mark.parametrize("name", ["occlusion", "rise"])
def test_occlusion_and_rise_explain_the_forward_only_model_with_their_sanity_check(looped, shape_pictures, name):
    result = run_technique(name, looped, pictures(shape_pictures)[:2], {"target": "top1"})
    maps = result.arrays[name]
    assert maps.shape == (2, 64, 64) and all(values.max() > 0 for values in maps)
    check = result.metrics["sanity_check"]
    assert check["steps"][:2] == ["top 1: /classifier/Gemm", "top 2: /features/features.12/Conv"] and check["passed"] is not None
    assert all(abs(rho) < 0.99 for rho in check["spearman"])  # the re-drawn initializers change what the method sees
    assert any("forward-only" in caveat for caveat in result.caveats)


def test_the_initializer_cascade_changes_the_scores_and_leaves_the_model_alone(looped, shape_pictures):
    batch = looped.spec.preprocess([decode_image(data) for _, data in pictures(shape_pictures)])
    before = looped.predict(batch)
    cascade = sanity.InitializerCascade(seed=0)
    randomized = cascade.copy_of(looped, None, None)
    cascade.randomize(randomized, 0)
    assert not np.allclose(randomized.predict(batch), before)
    again = cascade.copy_of(looped, None, None)
    cascade.randomize(again, 0)
    assert np.array_equal(again.predict(batch), randomized.predict(batch))  # replayed, not drawn again
    assert np.array_equal(looped.predict(batch), before)


def test_the_cascade_starts_at_what_the_method_reads_and_redraws_a_matmul_layers_weights(shape_pictures):
    """On the shipped ViT a rollout reads the attention probabilities: its cascade starts at the last block's qkv
    projection (a MatMul then an Add, named by the Add), and re-drawing it changes the MatMul's weights and the
    attention read, not only the bias."""
    from viz_server_plugins.toolkit import attention

    model = load_model(shipped_models()["shapes_vit"], name="shapes_vit")
    names = list(attention.attention_layers(model).names)
    cascade = sanity.InitializerCascade(seed=0, reads=lambda _model: names)
    randomized = cascade.copy_of(model, None, None)
    top = cascade.layers[0]
    assert top.name == "/blocks/blocks.3/qkv/Add" and top.weight
    assert "/head/Gemm" not in [layer.name for layer in cascade.layers]
    cascade.randomize(randomized, 0)
    assert top.weight in cascade.draws[0]
    batch = model.spec.preprocess([decode_image(data) for _, data in pictures(shape_pictures)[:2]])
    before, after = model.predict_layers(batch, names[-1:])[names[-1]], randomized.predict_layers(batch, names[-1:])[names[-1]]
    assert np.abs(before - after).max() > 1e-2


def test_gradient_techniques_are_refused_in_one_sentence_naming_those_that_run(looped, shape_pictures):
    with pytest.raises(UserError) as refused:
        run_technique("saliency", looped, pictures(shape_pictures)[:1])
    sentence = str(refused.value)
    assert "runs forward-only on onnxruntime" in sentence and "Gradient saliency needs its differentiable graph" in sentence
    assert "occlusion" in sentence and "rise" in sentence and "\n" not in sentence


@pytest.mark.parametrize("name", sorted(name for name, technique in techniques().items() if technique.runs_on == "runtime"))
def test_every_technique_that_claims_forward_passes_runs_on_the_forward_only_model(looped, shape_pictures, name):
    technique = techniques()[name]
    params = {"sanity_check": False, "faithfulness": False} if any(param.name == "sanity_check" for param in technique.params) else {}
    masks = [png_bytes((mask * 255).astype(np.uint8)) for _, _, _, mask in shape_pictures]

    def run():
        return run_technique(name, looped, pictures(shape_pictures) * 2, params, labels=[label for _, _, label, _ in shape_pictures] * 2, masks=masks * 2)

    if hasattr(technique, "fits") and not technique.fits(looped):  # a transformer's method on a CNN: one sentence
        with pytest.raises(UserError, match="not a vision transformer"):
            run()
        return
    assert run().artifacts


def test_the_plugin_guides_forward_attribution_example_runs_on_the_forward_only_model(looped, shape_pictures):
    import re
    from pathlib import Path

    guide = (Path(__file__).parents[2] / "docs" / "plugins.md").read_text()
    source = next(block for block in re.findall(r"```python\n(.*?)```", guide, re.S) if "class Blackout" in block)
    namespace: dict = {}
    exec(compile(source, "docs/plugins.md", "exec"), namespace)
    result = run_technique(namespace["Blackout"](), looped, pictures(shape_pictures)[:1], {"faithfulness": False})
    assert result.arrays["blackout"].shape == (1, 64, 64) and result.metrics["sanity_check"]["steps"]


def test_occlusion_starts_cover_every_pixel():
    assert starts(64, 8, 4) == list(range(0, 57, 4))  # where the steps fit: Captum's positions
    assert starts(10, 4, 4) == [0, 4, 6]


# ---- Captum parity on a torchvision export ----------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(0)
    network = torchvision.models.resnet18(weights=None, num_classes=4).eval()
    path = tmp_path_factory.mktemp("resnet") / "resnet18.onnx"
    torch.onnx.export(
        network,
        torch.randn(1, 3, 64, 64),
        path,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
        opset_version=17,
        dynamo=False,
    )
    return load_model(path)


@pytest.fixture(scope="module")
def resnet_case(resnet, shape_pictures):
    images = torch.from_numpy(resnet.spec.preprocess([decode_image(data) for _, data in pictures(shape_pictures)]))
    with torch.no_grad():
        targets = resnet.module(images).argmax(1)
    return resnet, images, targets


def relative_error(ours, reference) -> float:
    ours, reference = (np.asarray(value.detach() if isinstance(value, torch.Tensor) else value, np.float64) for value in (ours, reference))
    return float(np.abs(ours - reference).max() / max(np.abs(reference).max(), 1e-12))


def test_occlusion_matches_captum(resnet_case):
    from captum.attr import Occlusion as CaptumOcclusion

    model, images, targets = resnet_case
    reference = CaptumOcclusion(model.module).attribute(images.clone(), sliding_window_shapes=(3, 8, 8), strides=(3, 4, 4), baselines=0, target=targets)
    params = validate_params(Occlusion.params, {"window": 0.125, "stride": 0.5, "baseline": "zero"})
    mine = Occlusion().attribute(model, images, objective_for(model, classes=targets), params)
    # ours reads onnxruntime, Captum the torch graph: the two differ by the conversion's float error
    assert relative_error(mine, reference[:, 0]) <= 1e-3
    assert np.allclose(reference[:, 0].numpy(), reference[:, 2].numpy())


@pytest.mark.parametrize("method", ["gausslegendre"])
def test_integrated_gradients_matches_captum(resnet_case, method):
    from captum.attr import IntegratedGradients as CaptumIntegratedGradients

    model, images, targets = resnet_case
    reference = CaptumIntegratedGradients(model.module).attribute(images.clone(), baselines=torch.zeros_like(images), target=targets, n_steps=16, method=method)
    params = validate_params(IntegratedGradients.params, {"steps": 16, "baseline": "zero", "internal_batch": 24})
    mine = IntegratedGradients().attribute(model, images, objective_for(model, classes=targets), params)
    assert relative_error(mine, reference) <= 1e-4


def test_integrated_gradients_reports_completeness_and_says_when_the_path_is_too_coarse(shapes_model, shape_pictures):
    fine = run_technique("integrated_gradients", shapes_model, pictures(shape_pictures)[:2], {"steps": 64, "sanity_check": False, "faithfulness": False})
    gaps = fine.metrics["completeness"]["relative_gap"]
    assert len(gaps) == 2 and max(gaps) < 0.05 and not any("completeness" in caveat for caveat in fine.caveats)
    coarse = run_technique("integrated_gradients", shapes_model, pictures(shape_pictures)[:2], {"steps": 2, "sanity_check": False, "faithfulness": False})
    if max(coarse.metrics["completeness"]["relative_gap"]) > 0.05:
        assert "raise steps above 2" in coarse.caveats[0]
    else:
        pytest.fail("two path points should not add up to the score change on this model")
