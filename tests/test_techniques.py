"""The params schema: parsing, ranges, choices and unknown names, each with one clear sentence."""

import pytest

from viz_server.errors import UserError
from viz_server.techniques import Param, validate_params

SCHEMA = (
    Param("steps", "int", 10, "steps", minimum=1, maximum=100),
    Param("rate", "float", 0.1, "rate", minimum=0.0),
    Param("mode", "choice", "a", "mode", choices=("a", "b")),
    Param("smooth", "bool", False, "smooth"),
    Param("layer", "layer", "", "layer"),
)


def test_defaults_fill_missing_values():
    assert validate_params(SCHEMA, {}) == {"steps": 10, "rate": 0.1, "mode": "a", "smooth": False, "layer": ""}


def test_text_values_are_parsed():
    parsed = validate_params(SCHEMA, {"steps": "20", "rate": "1e-3", "mode": "b", "smooth": "yes", "layer": " conv1 "})
    assert parsed == {"steps": 20, "rate": 0.001, "mode": "b", "smooth": True, "layer": "conv1"}


@pytest.mark.parametrize(
    "raw,fragment",
    [
        ({"steps": "0"}, "below its minimum"),
        ({"steps": "1000"}, "above its maximum"),
        ({"steps": "2.5"}, "whole number"),
        ({"rate": "nan"}, "finite"),
        ({"rate": "fast"}, "a number"),
        ({"mode": "c"}, "one of a, b"),
        ({"smooth": "maybe"}, "true or false"),
        ({"colour": "red"}, "unknown parameter 'colour'"),
    ],
)
def test_bad_values_are_one_sentence(raw, fragment):
    with pytest.raises(UserError, match=fragment):
        validate_params(SCHEMA, raw)


def test_schema_rejects_default_outside_choices():
    with pytest.raises(ValueError):
        Param("mode", "choice", "z", "mode", choices=("a",))
