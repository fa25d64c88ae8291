"""Style transfer: Gram matrices, losses, and a run that lowers its loss on the shipped model."""

import torch

from viz_server.runner import run_technique
from viz_server_plugins.style_transfer import content_loss, gram, style_loss


def test_gram_matches_a_direct_computation():
    features = torch.randn(2, 3, 4, 5, dtype=torch.float64)
    expected = torch.zeros(2, 3, 3, dtype=torch.float64)
    for n in range(2):
        for i in range(3):
            for j in range(3):
                expected[n, i, j] = sum(features[n, i, y, x] * features[n, j, y, x] for y in range(4) for x in range(5)) / (3 * 4 * 5)
    torch.testing.assert_close(gram(features), expected)


def test_style_loss_of_an_image_against_itself_is_zero():
    features = {"a": torch.randn(1, 4, 6, 6), "b": torch.randn(1, 8, 3, 3)}
    grams = {name: gram(value) for name, value in features.items()}
    assert float(style_loss(features, grams)) == 0.0
    assert float(content_loss(features["a"], features["a"])) == 0.0
    assert float(style_loss({"a": features["a"] * 2, "b": features["b"]}, grams)) > 0


def test_style_transfer_and_texture_synthesis_lower_their_loss(shapes_model, shape_pictures):
    content, style = shape_pictures[0][:2], shape_pictures[3][:2]
    for mode in ("transfer", "texture"):
        result = run_technique("style_transfer", shapes_model, [content], {"mode": mode, "steps": 20}, second_image=style)
        assert result.metrics["final_loss"] < 0.5 * result.metrics["initial_loss"]
        low, high = shapes_model.spec.unit_bounds()
        assert (result.arrays["stylized"][0] >= low - 1e-5).all() and (result.arrays["stylized"][0] <= high + 1e-5).all()
    adam = run_technique("style_transfer", shapes_model, [content], {"optimizer": "adam", "steps": 20, "softmax": True}, second_image=style)
    assert adam.metrics["final_loss"] < adam.metrics["initial_loss"]
