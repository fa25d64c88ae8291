"""Every kind of image model: tasks recognised from the output, targets that mean something for each task, shapes
resolved at the size in use, labels that look like numbers, and no verdict on an empty map."""

from __future__ import annotations

import io
import json
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
from model_zoo import tiny_model
from PIL import Image
from task_models import export_task_model

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.installed import techniques
from viz_server.runner import run_technique
from viz_server.testing import check_objective, sample_inputs
from viz_server_models import shapes, shipped_models

CHECKS_OFF = {"sanity_check": False, "faithfulness": False}


def png(picture: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return buffer.getvalue()


def without_metadata(data: bytes, *keys: str) -> bytes:
    model = onnx.load_from_string(data)
    kept = [prop for prop in model.metadata_props if prop.key not in keys]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    return model.SerializeToString()


@pytest.fixture(scope="module")
def detector():
    return load_model(shipped_models()["shapes_detector"])


@pytest.fixture(scope="module")
def scenes():
    """Single-object scenes with their known boxes (the ground truth the maps are scored against)."""
    rng = np.random.default_rng(42)
    return [shapes.make_scene(rng, objects=(1, 1)) for _ in range(4)]


# ---- detection ----------------------------------------------------------------------------------------------


def test_the_shipped_detector_reads_as_a_yolov8_layout(detector):
    assert (detector.spec.task, detector.decoder.name) == ("detection", "yolo_anchors_last")
    assert detector.spec.labels == shapes.CLASSES and detector.spec.num_classes == 4
    inferred = load_model(without_metadata(shipped_models()["shapes_detector"].read_bytes(), "task"), use_cache=False)
    assert (inferred.spec.task, inferred.decoder.name) == ("detection", "yolo_anchors_last") and "task" in inferred.spec.guessed


@pytest.mark.parametrize("technique", ["gradcam", "saliency", "guided_backprop", "guided_gradcam"])
def test_a_detection_is_explained_inside_its_box(detector, scenes, technique):
    """detection:0 with the default layer: most of the map's mass lies inside that detection's box."""
    shares = []
    for index, scene in enumerate(scenes):
        result = run_technique(technique, detector, [(f"scene{index}.png", png(scene.image))], {"target": "detection:0", **CHECKS_OFF})
        details = result.metrics["objective"][0]
        x1, y1, x2, y2 = (int(round(v)) for v in details["box"])
        values = result.arrays[technique][0]
        shares.append(values[max(y1, 0) : y2, max(x1, 0) : x2].sum() / values.sum())
        assert details["detections"] and details["detection"] == 0 and details["class"] in shapes.CLASSES
        assert result.metrics["targets"][0].startswith("detection 0: ")
        assert any(artifact.name == "target_0.png" for artifact in result.artifacts)  # the detections, drawn
    assert np.median(shares) > 0.5, shares


def test_detection_targets_by_box_by_class_and_by_coordinate(detector, scenes):
    scene = scenes[0]
    image = [("scene.png", png(scene.image))]
    box = ",".join(str(int(v)) for v in scene.boxes[0])
    label = shapes.CLASSES[scene.labels[0]]
    by_box = run_technique("saliency", detector, image, {"target": f"box:{box}", **CHECKS_OFF})
    by_class = run_technique("saliency", detector, image, {"target": label, **CHECKS_OFF})
    assert by_box.metrics["objective"][0]["class"] == label == by_class.metrics["objective"][0]["class"]
    coordinate = run_technique("saliency", detector, image, {"target": "detection:0:w", **CHECKS_OFF})
    assert coordinate.metrics["objective"][0]["explains"] == "w" and coordinate.metrics["usable_maps"] == [True]
    with pytest.raises(UserError, match="detection:40 does not exist"):
        run_technique("saliency", detector, image, {"target": "detection:40"})
    with pytest.raises(UserError, match="region applies to dense outputs"):
        run_technique("saliency", detector, image, {"region": "0:2,0:2"})


def test_a_scene_without_objects_is_refused_with_a_sentence(detector):
    rng = np.random.default_rng(3)
    empty = (shapes.background(rng, shapes.SCENE_SIZE) * 255).astype(np.uint8)
    with pytest.raises(UserError, match="detects nothing on image 0"):
        run_technique("gradcam", detector, [("empty.png", png(empty))])


@pytest.mark.parametrize("technique", ["gradcam", "attribution_ranking"])
def test_a_picture_without_a_detection_is_left_out_with_a_caveat(detector, scenes, technique):
    """One empty picture among scenes: the others are explained, the caveat names the one left out and why."""
    rng = np.random.default_rng(3)
    empty = (shapes.background(rng, shapes.SCENE_SIZE) * 255).astype(np.uint8)
    pictures = [("scene.png", png(scenes[0].image)), ("empty.png", png(empty)), ("scene2.png", png(scenes[1].image))]
    result = run_technique(technique, detector, pictures, {"target": "detection:0", **(CHECKS_OFF if technique == "gradcam" else {})})
    caveat = next(caveat for caveat in result.caveats if "left out" in caveat)
    assert caveat.startswith("1 of 3 images were left out") and "empty.png: the model detects nothing on image 1" in caveat
    assert len(result.metrics["targets"]) == 2
    alone = run_technique(technique, detector, [pictures[0], pictures[2]], {"target": "detection:0", **(CHECKS_OFF if technique == "gradcam" else {})})
    if technique == "gradcam":  # the kept images' own figures, not those of the picture left out
        assert result.metrics["target_probability"] == alone.metrics["target_probability"] and len(result.metrics["predicted"]) == 2
        np.testing.assert_allclose(result.arrays["gradcam"], alone.arrays["gradcam"], rtol=1e-5, atol=1e-7)
    if technique == "gradcam":
        assert result.arrays["gradcam"].shape[0] == 2 and [a.group for a in result.artifacts if a.name == "input_1.png"] == ["1: scene2.png"]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
@pytest.mark.parametrize("name,decoder", [("yolo_anchors_first", "yolo_anchors_first"), ("boxes_and_scores", "boxes_and_scores")])
def test_other_detector_layouts(name, decoder, exporter):
    model = load_model(export_task_model(name, exporter), use_cache=False)
    assert (model.spec.task, model.decoder.name) == ("detection", decoder)
    images = torch.from_numpy(model.spec.preprocess([Image.open(io.BytesIO(data)) for _, data in sample_inputs(2)]))
    decoded = model.decode(model.predict(images.numpy()))
    assert all(d["detections"] and {"class", "confidence", "box"} <= set(d["detections"][0]) for d in decoded)
    check_objective(model, "detection:0", images)
    result = run_technique("saliency", model, sample_inputs(2), {"target": "top1"})
    assert result.metrics["usable_maps"] == [True, True] and result.metrics["sanity_check"]["passed"] is not None


# ---- sequence, embedding, dense ------------------------------------------------------------------------------


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_ctc_recognizer_is_explained_through_its_decoded_text(exporter):
    model = load_model(export_task_model("ctc", exporter), labels="a,b,c,d,e", use_cache=False)  # the blank left out
    assert (model.spec.task, model.decoder.name) == ("sequence", "ctc_greedy")
    pictures = sample_inputs(2)
    images = torch.from_numpy(model.spec.preprocess([Image.open(io.BytesIO(data)) for _, data in pictures]))
    text = model.decode(model.predict(images.numpy()))[0]["text"]
    assert set(text) <= set("abcde")
    check_objective(model, "top1", images)
    check_objective(model, "step:3", images)
    whole = run_technique("saliency", model, pictures, {"target": "text", **CHECKS_OFF})
    assert whole.metrics["targets"][0].startswith('the text "') and whole.metrics["usable_maps"] == [True, True]
    step = run_technique("gradcam", model, pictures, {"target": "step:2", **CHECKS_OFF})
    assert step.metrics["targets"][0].startswith("step 2")
    with pytest.raises(UserError, match="outside the model's 12 time steps"):
        run_technique("saliency", model, pictures, {"target": "step:40"})


def test_a_paddleocr_character_dictionary_becomes_the_ctc_labels():
    """PaddleOCR exports keep their characters in the metadata key ``character`` (blank first, space last)."""
    model = load_model(export_task_model("ctc", metadata=(("character", "a\nb\nc\nd"),)), use_cache=False)
    assert model.spec.labels == ("a", "b", "c", "d", " ") and "labels" not in model.spec.guessed
    pictures = sample_inputs(2)
    images = model.spec.preprocess([Image.open(io.BytesIO(data)) for _, data in pictures])
    assert set(model.decode(model.predict(images))[0]["text"]) <= set("abcd ")


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_crnn_with_a_bidirectional_lstm_converts_and_is_explained_through_its_text(exporter):
    model = load_model(export_task_model("crnn", exporter), labels="a,b,c,d,e", use_cache=False)
    assert (model.spec.task, model.decoder.name) == ("sequence", "ctc_greedy")
    assert model.conversion.worst_rel_error < 1e-5 and model.conversion.gradient_norm > 0
    pictures = sample_inputs(2)
    whole = run_technique("saliency", model, pictures, {"target": "text", **CHECKS_OFF})
    assert whole.metrics["targets"][0].startswith('the text "') and whole.metrics["usable_maps"] == [True, True]
    step = run_technique("saliency", model, pictures, {"target": "step:5", **CHECKS_OFF})
    assert step.metrics["targets"][0].startswith("step 5") and step.metrics["usable_maps"] == [True, True]


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_an_embedding_model_ending_in_normalize_is_explained_by_similarity(exporter):
    model = load_model(export_task_model("embedder", exporter), use_cache=False)
    assert (model.spec.task, model.decoder.name) == ("embedding", "normalized_embedding")
    assert model.conversion.worst_rel_error < 1e-5  # the Clip with a min and no max converts
    first, second = sample_inputs(2)
    result = run_technique("saliency", model, [first], {"target": "similarity"}, second_image=second)
    assert result.metrics["targets"][0].startswith("similarity to the second image") and result.metrics["usable_maps"] == [True]
    assert -1 <= result.metrics["objective"][0]["cosine_similarity"] <= 1
    with pytest.raises(UserError, match="second image"):
        run_technique("saliency", model, [first])
    dimension = run_technique("gradcam", model, [first], {"target": "dim:3", **CHECKS_OFF})
    assert dimension.metrics["targets"] == ["embedding dimension 3"]
    images = torch.from_numpy(model.spec.preprocess([Image.open(io.BytesIO(first[1]))]))
    check_objective(model, "similarity", images, second_image=images)


def test_an_embedding_through_the_cli(tmp_path):
    path = tmp_path / "embedder.onnx"
    path.write_bytes(export_task_model("embedder", "torchscript"))
    first, second = sample_inputs(2)
    (tmp_path / "a.png").write_bytes(first[1])
    (tmp_path / "b.png").write_bytes(second[1])
    command = [
        sys.executable,
        "-m",
        "viz_server.cli",
        "run",
        "saliency",
        str(path),
        "--image",
        str(tmp_path / "a.png"),
        "--second-image",
        str(tmp_path / "b.png"),
        "--out",
        str(tmp_path / "out"),
        "--json",
    ]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["metrics"]["task"] == "embedding"


def test_a_segmenter_class_over_its_own_mask(shape_pictures):
    model = load_model(export_task_model("segmenter"), labels='["background", "road", "car"]', use_cache=False)
    assert model.spec.task == "dense"
    result = run_technique("gradcam", model, [shape_pictures[0][:2]], {"target": "top1", "region": "mask", **CHECKS_OFF})
    assert result.metrics["targets"][0].endswith("where the model predicts it")
    images = torch.from_numpy(model.spec.preprocess([Image.open(io.BytesIO(shape_pictures[0][1]))]))
    check_objective(model, "top1", images, region="mask")


# ---- variable input size ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def variable_model():
    return load_model(export_task_model("variable_size", "torchscript"), image_size="48,96", labels="0,180")


def test_shapes_are_resolved_at_the_size_in_use(variable_model):
    spatial = [layer for layer in variable_model.layers if layer.spatial]
    assert spatial and variable_model.layers.default_cam_layer
    assert all(None not in layer.output_shape[1:] for layer in variable_model.layers)
    first = next(layer for layer in variable_model.layers if layer.op == "Conv")
    assert first.output_shape[2:] == (48, 96)
    bigger = load_model(export_task_model("variable_size", "torchscript"), image_size="64,64")
    assert next(layer for layer in bigger.layers if layer.op == "Conv").output_shape[2:] == (64, 64)


@pytest.mark.parametrize("name", sorted(techniques()))
def test_every_technique_runs_with_defaults_on_a_variable_size_model(variable_model, name):
    technique = techniques()[name]
    if not technique.supports(variable_model.spec.task) or name == "class_templates":  # no linear layer reads the image
        pytest.skip(f"{name} does not apply to this model")
    if not getattr(technique, "fits", lambda _model: True)(variable_model):  # a transformer's method on a CNN: one sentence
        with pytest.raises(UserError, match="not a vision transformer"):
            run_technique(name, variable_model, sample_inputs(1))
        return
    images = sample_inputs(8 if "image_set" in technique.inputs else 2)
    labels = ["0" if index % 2 else "180" for index in range(len(images))]
    second = images[0] if "second_image" in technique.inputs else None
    params = {"steps": 5} if any(param.name == "steps" for param in technique.params) else {}
    if name == "shape_bias":  # its stimuli are shapes: a model of other classes needs a mapping, and says so
        with pytest.raises(UserError, match="mapping"):
            run_technique(name, variable_model, images, params, labels=labels)
        return
    result = run_technique(name, variable_model, images, params, labels=labels, second_image=second)
    assert result.artifacts


def test_inspect_shows_resolved_shapes(tmp_path):
    path = tmp_path / "variable.onnx"
    path.write_bytes(export_task_model("variable_size", "torchscript"))
    completed = subprocess.run(
        [sys.executable, "-m", "viz_server.cli", "inspect", str(path), "--image-size", "48,96", "--json"], capture_output=True, text=True, timeout=300
    )
    assert completed.returncode == 0, completed.stderr
    layers = json.loads(completed.stdout)["layers"]
    assert layers["default_cam_layer"] and all(None not in layer["output_shape"][1:] for layer in layers["layers"])


# ---- labels that look like numbers --------------------------------------------------------------------------------


def test_labels_that_look_like_numbers_are_labels(variable_model):
    spec = variable_model.spec
    assert spec.labels == ("0", "180")
    assert (spec.class_index("180"), spec.class_index("0"), spec.class_index("index:1"), spec.class_index("1")) == (1, 0, 1, 1)
    result = run_technique("saliency", variable_model, sample_inputs(1), {"target": "180", **CHECKS_OFF})
    assert result.metrics["objective"][0] == {"class": "180", "index": 1} and result.metrics["targets"] == ["class 180"]
    with pytest.raises(UserError, match="out of range"):
        spec.class_index("index:180")


# ---- an empty map is "cannot judge" -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dead_class_model():
    """Class 1's score is a constant (its weights are zero): no gradient reaches the input from it."""
    head = np.random.default_rng(1).normal(0, 0.5, (3, 4))
    head[1] = 0.0
    return load_model(tiny_model(head_weight=head), labels="live,dead,other", use_cache=False)


@pytest.mark.parametrize("technique", ["saliency", "gradcam", "guided_backprop"])
def test_an_all_zero_map_gets_cannot_judge_never_passed(dead_class_model, technique):
    result = run_technique(technique, dead_class_model, sample_inputs(2), {"target": "dead"})
    assert result.metrics["usable_maps"] == [False, False]
    assert result.metrics["sanity_check"]["passed"] is None
    assert result.metrics["sanity_check"]["verdict"].startswith("Sanity check cannot judge: the map is all zero")
    assert "passed" not in result.metrics["sanity_check"]["verdict"]
    assert result.metrics["deletion_auc"] == [None, None] and result.metrics["insertion_auc"] == [None, None]
    assert any("is all zero" in caveat and "cannot support any conclusion" in caveat for caveat in result.caveats)
    live = run_technique(technique, dead_class_model, sample_inputs(1), {"target": "live"})
    assert live.metrics["usable_maps"] == [True] and live.metrics["sanity_check"]["passed"] is not None


def test_the_report_summary_says_cannot_judge_for_an_empty_map(dead_class_model):
    from viz_server.presentation import report_sections

    result = run_technique("saliency", dead_class_model, sample_inputs(1), {"target": "dead"}).to_json()
    job = {"technique": "saliency", "status": "done", "error": None, "model": {"name": "dead"}, "result": result}
    (section,) = report_sections({"kind": "audit", "title": "t", "status": "done", "jobs": [job]})
    assert section.rows[1][2] == "cannot judge (on the 1 picture checked)" and section.level == "warning"


# ---- techniques that need a classifier say so ----------------------------------------------------------------------------


def test_a_classifier_only_technique_refuses_another_task_in_one_sentence(detector, scenes):
    with pytest.raises(UserError, match="applies to classification models; shapes_detector is a detection model"):
        run_technique("robustness_curve", detector, [("scene.png", png(scenes[0].image))])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctc", "crnn", "segmenter", "embedder", "yolo_anchors_first", "variable_size"])
def test_smoothgrad_and_the_method_ranking_run_on_every_task(name):
    """Choices made on clean outputs under inference mode enter SmoothGrad's and the ranking's backward passes
    (a CTC recognizer's greedy path once failed there with "Inference tensors cannot be saved for backward")."""
    model = load_model(export_task_model(name), use_cache=False)
    first, second = sample_inputs(2)
    pictures, extra = ([first], {"second_image": second}) if name == "embedder" else ([first, second], {})
    smoothed = run_technique("saliency", model, pictures, {"smooth_samples": 3}, **extra)
    check = smoothed.metrics["sanity_check"]
    assert check["passed"] in (True, False) or (check["passed"] is None and "cannot judge" in " ".join(smoothed.caveats))
    ranking = run_technique("attribution_ranking", model, pictures, {}, **extra)
    ranked = {row["method"] for row in ranking.metrics["ranking"]}
    assert "Gradient saliency" in ranked and ranking.metrics["verdict"][0].endswith(".")


# ---- default layers: image feature maps the target reaches --------------------------------------------------


def test_a_yolov8_layout_explains_a_detection_at_the_class_branch_never_the_box_branch():
    model = load_model(export_task_model("yolo_v8_branches"), use_cache=False)
    assert model.layers.branching_head and model.layers.default_cam_layer.startswith("/boxes/")  # deepest in graph order
    result = run_technique("gradcam", model, sample_inputs(2), {"target": "detection:0", **CHECKS_OFF})
    assert result.metrics["layer"].startswith("/classes/") and result.metrics["usable_maps"] == [True, True]
    reason = next(caveat for caveat in result.caveats if caveat.startswith("The map is taken at layer"))
    assert reason.index("/boxes/") < reason.index("the target's gradient does not reach it") and "more." in reason


def test_a_text_detectors_map_is_never_its_own_output():
    model = load_model(export_task_model("text_detector"), image_size="32,32", use_cache=False)
    passed = dict(model.layers.passed_over())
    assert passed["/Sigmoid"] == "the model's output" and "/head/head.4/ConvTranspose" in passed
    result = run_technique("gradcam", model, sample_inputs(2), {"sanity_check": False})
    assert result.metrics["layer"] == model.layers.default_cam_layer == "/head/head.3/Relu"
    layer = model.layer("/head/head.3/Relu")
    assert layer.stride == (2, 2) and "16 x 16 cells of 2 x 2 input pixels" in result.caveats[1]


def test_a_recognizers_attention_weights_are_no_image_map():
    model = load_model(export_task_model("attention_recognizer"), use_cache=False)
    attention = [layer for layer in model.layers if layer.spatial and layer.output_shape[2] == layer.output_shape[3] == 12]
    assert attention and all("do not follow the input's" in layer.not_a_feature_map for layer in attention)
    assert model.layers.default_cam_layer not in {layer.name for layer in attention}
    assert model.layer(model.layers.default_cam_layer).stride == (4, 4)
    result = run_technique("gradcam", model, sample_inputs(2), {"target": "text", **CHECKS_OFF})
    assert result.metrics["layer"] == model.layers.default_cam_layer and result.metrics["usable_maps"] == [True, True]


def test_a_segmenters_map_is_taken_below_its_classifying_conv():
    model = load_model(export_task_model("segmenter"), use_cache=False)
    assert dict(model.layers.passed_over())["/classify/Conv"] == "the model's output"
    assert model.layers.default_cam_layer == "/encode/encode.3/Relu" and not model.layers.branching_head


def test_no_reached_feature_map_is_refused_naming_the_closest_layers():
    model = load_model(export_task_model("yolo_v8_branches"), use_cache=False)
    box_only = [name for name in model.layers.cam_candidates if name.startswith("/boxes/")]
    from dataclasses import replace

    model.layers = replace(model.layers, cam_candidates=tuple(box_only), default_cam_layer=box_only[0])
    with pytest.raises(UserError, match="reaches none of this model's image feature maps") as refusal:
        run_technique("gradcam", model, sample_inputs(1), {"target": "detection:0", **CHECKS_OFF})
    assert box_only[0] in str(refusal.value)


# ---- outputs read as they are ----------------------------------------------------------------------------


def test_a_time_major_recognizer_with_a_fixed_batch_is_read_as_a_sequence():
    """T x 1 x C, declared [1, 12]: the batch axis is found by running the model, moved to the front, and the whole
    output is verified (not its first row); the text is decoded and explained."""
    from task_models import TimeMajorCRNN, export_fixed_batch

    torch.manual_seed(5)
    model = load_model(export_fixed_batch(TimeMajorCRNN(), (1, 3, 16, 48), output_shape=[1, 12]), labels="a,b,c,d,e", use_cache=False)
    assert (model.spec.task, model.decoder.name) == ("sequence", "ctc_greedy")
    assert any("moved the output's batch axis 1 to the front ([12, 1, 6] -> [1, 12, 6])" in note for note in model.conversion.passes)
    assert all(check["max_rel_error"] < 1e-5 for check in model.conversion.parity)
    images = model.spec.preprocess([Image.open(io.BytesIO(data)) for _, data in sample_inputs(2)])
    assert model.predict(images).shape == (2, 12, 6)
    result = run_technique("saliency", model, sample_inputs(2), {"target": "text", **CHECKS_OFF})
    assert result.metrics["targets"][0].startswith('the text "') and result.metrics["usable_maps"] == [True, True]


def test_a_model_with_several_outputs_says_which_one_it_reads_on_every_result():
    import onnx

    class TwoOutputs(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.scores = torch.nn.Conv2d(3, 4, 3, stride=4)
            self.boxes = torch.nn.Conv2d(3, 8, 3, stride=4)

        def forward(self, x):
            return self.scores(x).flatten(2), self.boxes(x).flatten(2)

    buffer = io.BytesIO()
    torch.onnx.export(
        TwoOutputs().eval(),
        (torch.rand(1, 3, 32, 32),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["scores", "boxes"],
        dynamic_axes={"x": {0: "n"}},
    )
    model = load_model(buffer.getvalue(), use_cache=False)
    assert len(onnx.load_from_string(buffer.getvalue()).graph.output) == 2 and "task" in model.spec.guessed
    caveat = next(caveat for caveat in model.conversion.caveats if caveat.startswith("The model has 2 outputs"))
    assert "'scores'" in caveat and "'boxes'" in caveat
    result = run_technique("saliency", model, sample_inputs(1), CHECKS_OFF)
    assert caveat in result.caveats


def test_a_fixed_batch_of_two_with_a_class_major_output_is_read_per_image():
    """Output C x N with a fixed batch of 2: the batch axis is the one along which only the second image's slot
    changes when the second image changes (never assumed to be the first)."""
    from task_models import export_fixed_batch

    class ClassMajor(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 3, 3, stride=4)

        def forward(self, x):
            return self.features(x).mean((2, 3)).transpose(0, 1)  # C x N

    model = load_model(export_fixed_batch(ClassMajor(), (2, 3, 16, 16)), use_cache=False)
    assert any("moved the output's batch axis 1 to the front ([3, 2] -> [2, 3])" in note for note in model.conversion.passes)
    images = np.random.default_rng(0).random((2, 3, 16, 16)).astype(np.float32)
    both = model.predict(images)
    assert both.shape == (2, 3)
    np.testing.assert_allclose(both[1], model.predict(images[1:])[0], rtol=1e-5)


def test_a_transposed_yolov8_output_without_metadata_is_not_read_as_yolov5():
    """N x anchors x (4 + C) after a final Transpose has no objectness column: reading it as YOLOv5's layout would
    multiply the first class's score into every confidence."""
    from task_models import YoloV8Branches

    class Transposed(YoloV8Branches):
        def forward(self, x):
            return super().forward(x).transpose(1, 2)

    torch.manual_seed(5)
    buffer = io.BytesIO()
    torch.onnx.export(
        Transposed().eval(),
        (torch.rand(1, 3, 32, 32),),
        buffer,
        dynamo=False,
        opset_version=17,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
    )
    model = load_model(buffer.getvalue(), use_cache=False)
    assert model.decoder.name != "yolo_anchors_first" and "task" in model.spec.guessed
