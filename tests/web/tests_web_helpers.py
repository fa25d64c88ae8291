import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from viz_server.config import load_settings
from viz_server.web import create_app

API = {"X-Requested-With": "tests"}


def wait_for(client, url: str, timeout: float = 120.0, key: str = "status") -> dict:
    """Poll a JSON URL until its status leaves queued/running/inspecting."""
    deadline = time.monotonic() + timeout
    while True:
        data = client.get(url).get_json()
        if data[key] not in ("queued", "running", "inspecting"):
            return data
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} still {data[key]} after {timeout} s: {data}")
        time.sleep(0.2)


def wait_models_ready(client, timeout: float = 120.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        models = client.get("/api/models").get_json()
        if all(model["status"] != "inspecting" for model in models):
            return models
        if time.monotonic() > deadline:
            raise AssertionError(f"models still inspecting: {models}")
        time.sleep(0.2)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    application = create_app(load_settings(data_dir=tmp_path_factory.mktemp("viz-data"), max_jobs=2))
    application.config["TESTING"] = True
    yield application
    application.extensions["viz_dispatcher"].stop()


@pytest.fixture(scope="module")
def client(app):
    test_client = app.test_client()
    wait_models_ready(test_client)
    return test_client


@pytest.fixture(scope="module")
def shapes_id(client):
    return next(model["id"] for model in client.get("/api/models").get_json() if model["name"] == "shapes_cnn")


@pytest.fixture(scope="module")
def sample_ids(client):
    return {image["name"]: image["id"] for image in client.get("/api/images").get_json()}


def csrf(client, page: str = "/models") -> str:
    import re

    html = client.get(page).get_data(as_text=True)
    return re.search(r'name="csrf_token" value="([^"]+)"', html).group(1)


@contextlib.contextmanager
def running_server(data_dir, extra_env: dict | None = None):
    """`viz-server serve` in a real process on a free loopback port; yields its base URL."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {**os.environ, "VIZ_SERVER_DATA": str(data_dir), **(extra_env or {})}
    env.pop("VIZ_SERVER_BROKER_URL", None)
    process = subprocess.Popen([sys.executable, "-m", "viz_server.cli", "serve", "--port", str(port)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            try:
                urllib.request.urlopen(base + "/api/models", timeout=2)
                break
            except OSError:
                assert process.poll() is None, process.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        yield base
    finally:
        process.terminate()
        process.wait(timeout=30)
