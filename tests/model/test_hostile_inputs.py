"""Every hostile model and image gets a correct result or one clear sentence - never a crash."""

import numpy as np
import pytest
from hostile import hostile_images, hostile_models

from viz_server import load_model
from viz_server.errors import UserError
from viz_server.model.images import decode_image

MODELS = hostile_models()
IMAGES = hostile_images()


@pytest.mark.parametrize("name", sorted(MODELS))
def test_hostile_model(name):
    data, expectation = MODELS[name]
    if expectation == "ok":
        model = load_model(data, use_cache=False)
        assert model.conversion.worst_rel_error <= 1e-4
        return
    if expectation.startswith("forward-only: "):
        model = load_model(data, use_cache=False)
        assert model.module is None and expectation.removeprefix("forward-only: ") in model.forward_only
        return
    with pytest.raises(UserError) as caught:
        load_model(data, use_cache=False)
    message = str(caught.value)
    assert expectation in message
    assert "\n" not in message and message.endswith(".")


def test_markup_node_name_is_kept_verbatim():
    model = load_model(MODELS["markup_names.onnx"][0], use_cache=False)
    assert model.layers.first_conv == "<script>alert('x')</script><b>conv</b>"


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_hostile_image(name):
    data, expectation = IMAGES[name]
    if expectation == "ok":
        picture = decode_image(data, name)
        assert picture.mode == "RGB" and min(picture.size) >= 1
        return
    with pytest.raises(UserError) as caught:
        decode_image(data, name)
    assert expectation in str(caught.value)


def test_sixteen_bit_is_rescaled_not_clipped():
    picture = decode_image(IMAGES["sixteen_bit.png"][0])
    values = np.asarray(picture)
    assert values.max() > 200 and values.min() < 50  # spread over the 8-bit range, not saturated


def test_rgba_is_composited_on_white():
    from pictures import png_bytes

    transparent = np.zeros((4, 4, 4), np.uint8)
    picture = decode_image(png_bytes(transparent, "RGBA"))
    assert (np.asarray(picture) == 255).all()
