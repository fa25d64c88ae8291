"""Model spec: metadata, guesses, user overrides, sidecar files, and the preprocessing round trip."""

import json

import numpy as np
import pytest
from model_zoo import export
from PIL import Image

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.model.spec import build_spec


def test_shipped_metadata_is_read(shapes_model):
    spec = shapes_model.spec
    assert spec.labels == ("circle", "square", "triangle", "cross")
    assert spec.mean == (0.5, 0.5, 0.5) and spec.std == (0.25, 0.25, 0.25)
    assert (spec.height, spec.width, spec.layout) == (64, 64, "NCHW")
    assert spec.guessed == ()


def test_guesses_are_recorded_and_overrides_win(tmp_path):
    data = export("residual", "torchscript", 17)
    guessed = load_model(data)
    assert {"normalization", "labels", "value_range"} <= set(guessed.spec.guessed)
    assert guessed.spec.mean == (0.485, 0.456, 0.406)
    sidecar = tmp_path / "spec.toml"
    sidecar.write_text('labels = ["a", "b", "c", "d", "e"]\nvalue_range = [0, 255]\nmean = [127.5]\nstd = [127.5]\n')
    overridden = load_model(data, spec_file=sidecar, channel_order="BGR")
    assert overridden.spec.labels == ("a", "b", "c", "d", "e")
    assert overridden.spec.value_range == (0.0, 255.0) and overridden.spec.mean == (127.5,) * 3
    assert overridden.spec.channel_order == "BGR"
    assert "labels" not in overridden.spec.guessed


@pytest.mark.parametrize(
    "overrides,fragment",
    [
        ({"labels": json.dumps(["a", "b"])}, "one label per output"),
        ({"value_range": "5,1"}, "value_range"),
        ({"std": "0,1,1"}, "std"),
        ({"image_size": "10,10"}, "contradicts"),
        ({"colour": "red"}, "not a model spec field"),
    ],
)
def test_bad_overrides_are_one_sentence(overrides, fragment):
    with pytest.raises(UserError, match=fragment):
        build_spec("x", [None, 3, 32, 32], 5, {}, overrides)


def test_preprocess_round_trip_nchw_and_nhwc(shapes_model):
    rng = np.random.default_rng(0)
    picture = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    batch = shapes_model.spec.preprocess([picture])
    assert batch.shape == (1, 3, 64, 64) and batch.dtype == np.float32
    np.testing.assert_array_equal(shapes_model.spec.to_display(batch)[0], np.asarray(picture))
    nhwc = load_model(export("nhwc_keras", "torchscript", 17)).spec
    small = picture.resize((32, 32))
    batch = nhwc.preprocess([small])
    assert batch.shape == (1, 32, 32, 3) and 0 <= batch.min() and batch.max() <= 255
    np.testing.assert_array_equal(nhwc.to_display(batch)[0], np.asarray(small))


def test_dynamic_spatial_size_uses_guess_or_override():
    spec = build_spec("x", [None, 3, None, None], 10, {}, {})
    assert (spec.height, spec.width) == (224, 224) and "image_size" in spec.guessed
    spec = build_spec("x", [None, 3, None, None], 10, {"image_size": "[96, 128]"}, {})
    assert (spec.height, spec.width) == (96, 128)


SPEC_VALUES = {
    "layout": "NHWC",
    "value_range": "0,255",
    "mean": "0.1,0.2,0.3",
    "std": "0.3,0.2,0.1",
    "channel_order": "BGR",
    "image_size": "48,96",
    "labels": "a,b,c",
    "task": "embedding",
}


def test_every_spec_field_has_a_value_in_this_test():
    from viz_server.model.spec import SPEC_FIELDS

    assert set(SPEC_VALUES) == set(SPEC_FIELDS)


@pytest.mark.parametrize("name", sorted(SPEC_VALUES))
def test_the_input_key_changes_exactly_with_the_fields_that_change_the_input(name):
    """Verification and model checks are kept per ``input_key``: a field that changes what the model is fed must
    change the key (or a new value would never be verified), one that does not must leave it alone."""
    from viz_server.model.spec import SPEC_FIELDS, input_key

    dims = [None, 3, None, None] if name != "layout" else [None, None, None, 3]
    plain = build_spec("x", [None, 3, None, None], 3, {}, {})
    changed = build_spec("x", dims, 3, {}, {name: SPEC_VALUES[name]}, task=SPEC_VALUES["task"] if name == "task" else "classification")
    assert getattr(changed, SPEC_FIELDS[name].sets[0]) != getattr(plain, SPEC_FIELDS[name].sets[0])
    assert (input_key(changed) != input_key(plain)) == SPEC_FIELDS[name].changes_input


def test_model_check_findings_belong_to_the_spec_they_were_found_at(tmp_path):
    """A check whose finding depends on the spec (here: the mean) reports at each spec what holds there, also
    when the conversion comes from the cache of a load under another spec."""
    from viz_server import hookimpl, plugins
    from viz_server_models import shipped_models

    class MeanCheck:
        @hookimpl
        def model_checks(self, model):
            return [f"checked at mean {model.spec.mean[0]:g}"]

    plugins.plugin_manager().register(MeanCheck(), name="mean_check")
    try:
        path = shipped_models()["shapes_cnn"]
        first = load_model(path, mean="0.4", cache_dir=tmp_path)
        second = load_model(path, mean="0.6", cache_dir=tmp_path)
        again = load_model(path, mean="0.4", cache_dir=tmp_path)
    finally:
        plugins.reset_plugin_manager()
    found = [[f["finding"] for f in model.conversion.findings if f["check"] == "mean_check"] for model in (first, second, again)]
    assert found == [["checked at mean 0.4"], ["checked at mean 0.6"], ["checked at mean 0.4"]]
    assert len(again.conversion.checked) == 2  # one entry per spec input key, the third load found its own


def test_findings_follow_every_spec_field_a_check_may_read(tmp_path):
    """A check may read the labels or the task as well as the input: a load with other labels shows its own."""
    from viz_server import hookimpl, plugins
    from viz_server_models import shipped_models

    class LabelCheck:
        @hookimpl
        def model_checks(self, model):
            return [f"first label {model.spec.labels[0]}"]

    plugins.plugin_manager().register(LabelCheck(), name="label_check")
    try:
        path = shipped_models()["shapes_cnn"]
        default = load_model(path, cache_dir=tmp_path)
        renamed = load_model(path, labels="w,x,y,z", cache_dir=tmp_path)
    finally:
        plugins.reset_plugin_manager()
    assert [f["finding"] for f in default.conversion.findings if f["check"] == "label_check"] == ["first label circle"]
    assert [f["finding"] for f in renamed.conversion.findings if f["check"] == "label_check"] == ["first label w"]


def test_parity_shown_is_the_parity_at_the_spec_in_use(tmp_path):
    from viz_server.model.spec import input_key
    from viz_server_models import shipped_models

    path = shipped_models()["shapes_cnn"]
    default = load_model(path, cache_dir=tmp_path)
    scaled = load_model(path, value_range="0,255", mean="127.5", std="64", cache_dir=tmp_path)
    assert scaled.conversion.parity == scaled.conversion.verified[input_key(scaled.spec)]
    assert default.conversion.parity == default.conversion.verified[input_key(default.spec)]
    assert scaled.conversion.parity != default.conversion.parity and all("probe" in check for check in scaled.conversion.parity)
