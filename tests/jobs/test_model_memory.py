"""A job process keeps its last model between jobs, and never hands a job a model another job changed."""

import torch

from viz_server import load_model
from viz_server.jobs import model_memory
from viz_server_models import shipped_models


def _recall(loads: list, name="shapes_cnn", overrides=None):
    path = shipped_models()["shapes_cnn"]

    def load():
        loads.append(1)
        return load_model(path, name=name, **(overrides or {}))

    return model_memory.recall("sha-of-shapes", name, overrides, load)


def test_the_same_model_is_kept_and_a_different_spec_or_name_loads_again():
    model_memory.forget()
    loads = []
    first = _recall(loads)
    assert _recall(loads) is first and len(loads) == 1
    assert _recall(loads, overrides={"labels": ["a", "b", "c", "d"]}) is not first and len(loads) == 2
    assert _recall(loads, name="renamed").name == "renamed" and len(loads) == 3
    model_memory.forget()


def test_a_model_a_job_left_changed_is_loaded_again():
    """Each thing a technique could leave behind: a hook, a mode, a gradient flag, a weight."""
    changes = (
        lambda module: module.register_forward_hook(lambda *args: None),
        lambda module: module.train(),
        lambda module: next(module.parameters()).requires_grad_(not next(module.parameters()).requires_grad),
        lambda module: next(module.parameters()).data.add_(torch.ones(1)),
    )
    for change in changes:
        model_memory.forget()
        loads = []
        first = _recall(loads)
        change(first.module)
        again = _recall(loads)
        assert again is not first and len(loads) == 2
        assert model_memory.fingerprint(again.module) == model_memory.fingerprint(load_model(shipped_models()["shapes_cnn"]).module)
    model_memory.forget()
