"""A job process keeps its last model between jobs, and never hands a job a model another job changed."""

import pytest
import torch

from viz_server import load_model
from viz_server.jobs import model_memory
from viz_server_models import shipped_models


@pytest.fixture(autouse=True)
def _empty_memory():
    model_memory.forget()
    yield
    model_memory.forget()


def _recall(loads: list, name="shapes_cnn", overrides=None):
    path = shipped_models()["shapes_cnn"]

    def load():
        loads.append(1)
        return load_model(path, name=name, **(overrides or {}))

    return model_memory.recall("sha-of-shapes", name, overrides, load)


def test_the_same_model_is_kept_and_a_different_spec_or_name_loads_again():
    loads = []
    first = _recall(loads)
    assert _recall(loads) is first and len(loads) == 1
    assert _recall(loads, overrides={"labels": ["a", "b", "c", "d"]}) is not first and len(loads) == 2
    assert _recall(loads, name="renamed").name == "renamed" and len(loads) == 3


def _shuffle_a_weight(module):
    weight = next(module.parameters())
    weight.data.copy_(weight.data.flatten().flip(0).reshape(weight.shape))  # same values, same sum, other places


CHANGES = {
    "forward hook": lambda module: module.register_forward_hook(lambda *args: None),
    "backward hook on a layer": lambda module: list(module.modules())[2].register_full_backward_hook(lambda *args: None),
    "training mode": lambda module: module.train(),
    "gradient flag": lambda module: next(module.parameters()).requires_grad_(not next(module.parameters()).requires_grad),
    "weight value": lambda module: next(module.parameters()).data.add_(torch.ones(1)),
    "weights reordered (same sum)": _shuffle_a_weight,
    "dtype": lambda module: module.double(),
    "forward replaced on an instance": lambda module: setattr(list(module.modules())[2], "forward", lambda x: x),
}


@pytest.mark.parametrize("change", CHANGES, ids=list(CHANGES))
def test_a_model_a_job_left_changed_is_loaded_again_from_disk(change):
    loads = []
    first = _recall(loads)
    pristine = model_memory.fingerprint(first)
    CHANGES[change](first.module)
    again = _recall(loads)
    assert again is not first and again.module is not first.module and len(loads) == 2  # a new graph, not the cached one
    assert model_memory.fingerprint(again) == pristine
    assert _recall(loads) is again and len(loads) == 2  # and that one is kept from then on
