"""The shipped models load, are accurate on fresh data, and show what their model cards promise."""

import numpy as np

from viz_server_models import shapes


def test_shapes_model_is_accurate_on_fresh_images(shapes_model):
    data = shapes.make_dataset(200, seed=1234, congruent_fraction=1.0)
    batch = shapes_model.spec.unit_to_model(data.images.astype(np.float32) / 255.0)
    accuracy = (shapes_model.predict(batch).argmax(1) == data.shape_labels).mean()
    assert accuracy > 0.85


def test_digit_templates_look_like_digits(digits_model):
    """Each class's weight template correlates best with the mean image of its own digit."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    weights = digits_model.onnx_model.graph.initializer
    from onnx import numpy_helper

    matrix = next(numpy_helper.to_array(t) for t in weights if numpy_helper.to_array(t).ndim == 2)
    templates = matrix.reshape(10, 64) if matrix.shape == (10, 64) else matrix.T.reshape(10, 64)
    means = np.stack([digits.data[digits.target == k].mean(0) for k in range(10)])
    correlation = np.corrcoef(np.concatenate([templates, means]))[:10, 10:]
    assert (correlation.argmax(1) == np.arange(10)).sum() >= 9


def test_generator_masks_match_the_pictures():
    rng = np.random.default_rng(0)
    picture, mask = shapes.make_image("cross", "circle", rng)
    assert picture.shape == (64, 64, 3) and mask.dtype == bool and 0.05 < mask.mean() < 0.5
    conflict = shapes.cue_conflict_set(per_pair=1, seed=0)
    assert len(conflict.images) == 12 and (conflict.shape_labels != conflict.texture_labels).all()


def test_the_shapes_vit_is_read_as_a_transformer_from_its_graph():
    """Its tokens and attention are found without being told, it takes any batch, and it learned the shapes."""
    from viz_server import load_model
    from viz_server_models import shipped_models
    from viz_server_plugins.toolkit.attention import attention_layers

    model = load_model(shipped_models()["shapes_vit"])
    layers = attention_layers(model)
    assert len(layers.names) == 4 and layers.grid == (8, 8) and layers.leading == 1 and model.max_batch is None
    assert model.layer(model.layers.default_cam_layer).tokens == "sequence"
    data = shapes.make_dataset(200, seed=1234, congruent_fraction=1.0)
    accuracy = (model.predict(model.spec.unit_to_model(data.images.astype(np.float32) / 255.0)).argmax(1) == data.shape_labels).mean()
    assert accuracy > 0.65
