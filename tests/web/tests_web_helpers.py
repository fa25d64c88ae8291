import os
import shutil
import time
from pathlib import Path

import pytest

from viz_server.config import load_settings
from viz_server.testing import running_server  # noqa: F401  (the web tests import it from here)
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


# ---- browser tests: Playwright driving Debian's headless Chromium against `viz-server serve` ----------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
BROWSER_TESTS = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (CI installs it)"),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A real server (its own data folder, job processes) for one test module."""
    with running_server(tmp_path_factory.mktemp("browser-data")) as base:
        yield base


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium must be installed for the browser tests"
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    """Where screenshots go: $VIZ_SCREENSHOTS, or the test's temporary folder."""
    folder = Path(os.environ.get("VIZ_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder
