"""A contract test plugin authors run on their own techniques.

    from viz_server.testing import check_plugin
    def test_my_plugin():
        check_plugin(my_plugin_module)

``check_plugin`` runs every technique the plugin registers on the shipped shapes model (the shapes ViT for a
method that ``fits`` transformers only; or a model you pass) with its default params and asserts the Result
contract: declared schema valid, artifacts of a kind some installed renderer shows (PNG bytes for pictures and plots), arrays behind pictures present, JSON-ready
metrics, plain-sentence caveats, provenance stamped (with the contract version), the same seed giving the
same arrays, and cancellation honoured (a cancelled run raises ``Cancelled``).

``objective_for`` gives the objective a technique would get for a target (with fixed classes when asked), and
``check_objective`` asserts the objective contract for a model's task (a decoder plugin's author runs it).

``running_server`` starts a real ``viz-server serve`` on a free loopback port for integration tests (and the
server benchmark).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
from PIL import Image

from viz_server.errors import Cancelled
from viz_server.techniques import CONTRACT_VERSION, Result, Technique, check_technique


def sample_inputs(count: int = 2) -> list[tuple[str, bytes]]:
    """Generated pictures from the shapes dataset, as (name, PNG bytes)."""
    from viz_server_models import shapes

    rng = np.random.default_rng(0)
    found = []
    for index in range(count):
        name = shapes.CLASSES[index % len(shapes.CLASSES)]
        picture, _ = shapes.make_image(name, name, rng)
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="PNG")
        found.append((f"{name}_{index}.png", buffer.getvalue()))
    return found


def check_result(result: Result) -> None:
    """Assert that a Result follows the contract (raises AssertionError naming the first problem)."""
    assert isinstance(result, Result), f"run() must return a Result, got {type(result).__name__}"
    names = [artifact.name for artifact in result.artifacts]
    assert len(names) == len(set(names)), f"artifact names must be unique: {names}"
    for name, array in result.arrays.items():
        assert isinstance(array, np.ndarray), f"array {name!r} must be a numpy array"
    from viz_server.presentation import ArtifactLinks, artifact_renderers, render_artifact

    renderers = artifact_renderers()
    for artifact in result.artifacts:
        assert artifact.kind in renderers, f"artifact {artifact.name}: no installed renderer shows kind {artifact.kind!r} (known: {', '.join(renderers)})"
        assert artifact.caption.strip(), f"artifact {artifact.name} needs a caption"
        if renderers[artifact.kind].media_type == "image/png":
            picture = Image.open(io.BytesIO(artifact.data))
            assert picture.format == "PNG", f"artifact {artifact.name} must hold PNG bytes"
        problems = renderers[artifact.kind].problems(artifact.to_json())
        assert not problems, f"artifact {artifact.name}: {'; '.join(problems)}"
        assert "unrendered" not in render_artifact(artifact.to_json(), ArtifactLinks(src="data:,")), f"artifact {artifact.name}: its renderer fails"
        if artifact.array is not None:
            assert artifact.array in result.arrays, f"artifact {artifact.name} names a missing array {artifact.array!r}"
    json.dumps(result.metrics)  # metrics must be JSON-ready
    assert all(isinstance(caveat, str) and caveat.strip() for caveat in result.caveats), "caveats must be sentences"
    for key in ("technique", "technique_version", "params", "seed", "model"):
        assert key in result.provenance, f"provenance lacks {key!r}"
    assert result.provenance.get("contract_version") == CONTRACT_VERSION, "provenance must record the plugin contract version"


def check_technique_contract(technique: Technique, model=None, images: list[tuple[str, bytes]] | None = None) -> Result:
    """Run ``technique`` with default params through every contract check; return its Result."""
    from viz_server.runner import run_technique

    problems = check_technique(technique)
    assert not problems, f"{getattr(technique, 'name', technique)}: " + "; ".join(problems)
    if model is None:  # the shipped shapes CNN, or the shipped shapes ViT for a method that fits transformers only
        from viz_server.model.pipeline import load_model
        from viz_server_models import shipped_models

        model = load_model(shipped_models()["shapes_cnn"])
        if not getattr(technique, "fits", lambda _model: True)(model):
            model = load_model(shipped_models()["shapes_vit"])
    if images is None:
        images = sample_inputs(8 if {"image_set", "dataset"} & set(technique.inputs) else 2)
    labels = [name.split("_")[0] for name, _ in images]
    second = images[0] if "second_image" in technique.inputs else None
    first = run_technique(technique, model, images, seed=3, second_image=second, labels=labels)
    check_result(first)
    again = run_technique(technique, model, images, seed=3, second_image=second, labels=labels)
    for name, array in first.arrays.items():
        np.testing.assert_allclose(again.arrays[name], array, rtol=1e-5, atol=1e-6, err_msg=f"array {name} differs for the same seed")
    try:
        run_technique(technique, model, images, seed=3, second_image=second, labels=labels, is_cancelled=lambda: True)
    except Cancelled:
        pass
    else:
        raise AssertionError(f"{technique.name} ignored cancellation: call ctx.progress(...) or ctx.check_cancelled() as it works")
    return first


def objective_for(model, target: str = "top1", region: str = "", second_image=None, classes=None):
    """The ``Objective`` a technique gets for ``target`` on ``model`` (its task's decoder makes it); ``classes``
    (one class index per image) fixes the choices of a classifier's or dense model's objective."""
    from viz_server.techniques import Context

    objective = Context(model=model, second_image=second_image).objective(target, region)
    if classes is not None:
        objective.choices = [int(c) for c in classes]
    return objective


def check_objective(model, target: str, images, region: str = "", second_image=None):
    """Assert the objective contract for one target on a batch of model-space ``images`` (a torch tensor):
    choices made once, one differentiable scalar per image with a gradient reaching the input, probabilities in
    [0, 1], captions, ``take`` and ``repeat`` keeping the choices. Returns the objective."""
    import torch

    objective = objective_for(model, target, region, second_image)
    inputs = images.detach().clone().requires_grad_(True)
    outputs = model.module(inputs)
    scores = objective.score(outputs)
    assert scores.shape == (len(images),), f"score must give one scalar per image, got shape {tuple(scores.shape)}"
    (gradient,) = torch.autograd.grad(scores.sum(), inputs)
    assert torch.isfinite(gradient).all(), "the objective's gradient must be finite"
    probabilities = objective.probability(outputs.detach().numpy(), objective.choices)
    assert len(probabilities) == len(images) and all(0.0 <= float(p) <= 1.0 for p in probabilities), f"probabilities must lie in [0, 1]: {probabilities}"
    captions = objective.captions()
    assert len(captions) == len(images) and all(isinstance(c, str) and c for c in captions), "every choice needs a caption"
    again = objective.repeat(2).score(torch.cat([outputs, outputs]).detach())
    torch.testing.assert_close(again, torch.cat([scores, scores]).detach(), msg="repeat() must keep each image's choice")
    json.dumps(objective.to_json(), default=str)
    return objective


def check_plugin(plugin, model=None) -> list[Result]:
    """Run ``check_technique_contract`` on every technique a plugin module/object registers."""
    registered = list(plugin.register_techniques())
    assert registered, "register_techniques() returned no techniques"
    return [check_technique_contract(technique, model) for technique in registered]


def server_process(data_dir, extra_env: dict | None = None, timeout: float = 600.0) -> tuple[subprocess.Popen, str]:
    """Start `viz-server serve` (embedded runner) on a free loopback port; return the process and its base URL once
    the API answers (readiness, not a race: ``timeout`` only bounds a server that never answers, and a loaded
    machine may take minutes to import torch). The caller stops it (``running_server`` does); a server that never
    answered is killed here."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "VIZ_SERVER_DATA": str(data_dir), **(extra_env or {})}
    env.pop("VIZ_SERVER_BROKER_URL", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "viz_server.cli", "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(base + "/api/models", timeout=2)
            return process, base
        except OSError:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited: {process.stderr.read().decode()[-2000:] if process.stderr else ''}") from None
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"the server did not answer within {timeout:g} s") from None
            time.sleep(0.2)


@contextlib.contextmanager
def running_server(data_dir, extra_env: dict | None = None, timeout: float = 600.0):
    """`viz-server serve` in a real process on a free loopback port, data in ``data_dir``; yields its base URL
    once the API answers, and stops the server on exit."""
    process, base = server_process(data_dir, extra_env, timeout)
    try:
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
