"""Scale-out for real: a redis-server broker, a `viz-server worker` process, and jobs that run through them."""

import os
import shutil
import socket
import subprocess
import sys

import pytest
from tests_web_helpers import API, wait_for, wait_models_ready

from viz_server.config import load_settings
from viz_server.web import create_app

REDIS = shutil.which("redis-server")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(REDIS is None and not os.environ.get("CI"), reason="redis-server is not installed (CI installs it)")]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def celery_setup(tmp_path_factory):
    assert REDIS, "redis-server must be installed for the scale-out test"
    port = _free_port()
    redis = subprocess.Popen(
        [REDIS, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    data_dir = tmp_path_factory.mktemp("celery-data")
    broker = f"redis://127.0.0.1:{port}/0"
    env = {**os.environ, "VIZ_SERVER_BROKER_URL": broker, "VIZ_SERVER_DATA": str(data_dir)}
    log = open(data_dir / "worker.log", "wb")
    worker = subprocess.Popen([sys.executable, "-m", "viz_server.cli", "worker", "--concurrency", "1"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:  # the worker and Redis are stopped whatever fails from here on
        yield create_app(load_settings(data_dir=data_dir, broker_url=broker)), worker, data_dir
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        redis.terminate()
        redis.wait(timeout=10)
        log.close()


def test_jobs_run_on_a_celery_worker(celery_setup):
    app, worker, data_dir = celery_setup
    client = app.test_client()
    models = {model["name"]: model for model in wait_models_ready(client, timeout=180)}
    assert models["shapes_cnn"]["status"] == "ready", (data_dir / "worker.log").read_text()[-2000:]
    image = client.get("/api/images").get_json()[0]
    response = client.post("/api/jobs", json={"technique": "saliency", "model_id": models["shapes_cnn"]["id"], "image_ids": [image["id"]]}, headers=API)
    job = wait_for(client, f"/api/jobs/{response.get_json()['id']}", timeout=180)
    assert job["status"] == "done", job
    assert client.get(job["result"]["artifacts"][-1]["url"]).status_code == 200
    assert worker.poll() is None  # the worker keeps serving
    assert "viz_server.run_job" in (data_dir / "worker.log").read_text()
