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
