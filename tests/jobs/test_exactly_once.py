"""Jobs run exactly once: job processes die with a SIGKILLed server, a restart takes over only expired leases,
timeouts count job time only, a timed-out inspection fails its model, and the data folder is private."""

from __future__ import annotations

import signal
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest

from viz_server.config import load_settings
from viz_server.jobs.embedded import EmbeddedRunner
from viz_server.store import JobRecord, ModelRecord, Store
from viz_server.testing import server_process

pytestmark = pytest.mark.slow  # real servers and job processes


def children(pid: int) -> set[int]:
    """Process ids whose parent is ``pid`` (Linux /proc)."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                found.add(int(entry.name))
    return found


def alive(pid: int) -> bool:
    try:
        state = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def start_server(data_dir, **environment) -> tuple[subprocess.Popen, str]:
    return server_process(data_dir, environment)


def wait_job(store: Store, job_id: int, states=("done", "failed", "cancelled"), timeout=180.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = store.db.get(JobRecord, job_id)
        if job is not None and job.status in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status if job else None}"
        time.sleep(0.1)


def ready_store(data_dir) -> Store:
    store = Store(load_settings(data_dir=data_dir))
    deadline = time.monotonic() + 180
    while any(model.status == "inspecting" for model in store.models()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    return store


def slow_job(store: Store, steps: int = 1500) -> int:
    model = next(model for model in store.models() if model.name == "shapes_cnn")
    return store.create_job("class_visualization", model.id, [], {"steps": steps, "target": "0"}).id


def test_a_sigkilled_server_takes_its_job_along_and_the_restart_runs_it_once(tmp_path):
    server, _ = start_server(tmp_path, VIZ_SERVER_JOB_LEASE="2")
    store = ready_store(tmp_path)
    job_id = slow_job(store)
    wait_job(store, job_id, states=("running",))
    time.sleep(1.0)  # the process is working on it
    workers = children(server.pid)
    assert workers, "the server runs its jobs in child processes"
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=10)
    deadline = time.monotonic() + 5
    while any(alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(alive(pid) for pid in workers), "a job process outlived its server"
    assert store.db.get(JobRecord, job_id).status == "running"  # nobody recorded an outcome
    restarted, _ = start_server(tmp_path, VIZ_SERVER_JOB_LEASE="2")
    try:
        job = wait_job(store, job_id)
        assert job.status == "done" and job.attempts == 2, (job.status, job.attempts, job.error)
    finally:
        restarted.terminate()
        restarted.wait(timeout=30)


def test_a_live_lease_is_never_taken_over(tmp_path):
    store = ready_store_from_runner(tmp_path)
    job_id = slow_job(store, steps=50)
    store.db.claim_job(job_id)  # "another server" runs it: it keeps renewing the lease
    stop = threading.Event()

    def renew():
        while not stop.wait(0.3):
            store.db.beat(job_id)

    renewer = threading.Thread(target=renew, daemon=True)
    renewer.start()
    settings = load_settings(data_dir=tmp_path, job_lease=1.5, standby=False)
    runner = EmbeddedRunner(Store(settings), settings)
    runner.start()
    try:
        time.sleep(4)
        job = store.db.get(JobRecord, job_id)
        assert job.status == "running" and job.attempts == 1 and job_id not in runner.running  # left alone
        stop.set()  # the other server dies: its lease runs out, and the job runs here, once
        job = wait_job(store, job_id)
        assert job.status == "done" and job.attempts == 2
    finally:
        stop.set()
        runner.stop()


def ready_store_from_runner(data_dir) -> Store:
    from viz_server.web import create_app

    app = create_app(load_settings(data_dir=data_dir))
    try:
        return ready_store(data_dir)
    finally:
        app.extensions["viz_dispatcher"].stop()


def test_the_timeout_counts_job_time_not_imports(tmp_path):
    store = ready_store_from_runner(tmp_path)
    model = next(model for model in store.models() if model.name == "shapes_cnn")
    image = store.images("samples")[0]
    job_id = store.create_job("saliency", model.id, [image.id], {"sanity_check": False, "faithfulness": False}).id
    settings = load_settings(data_dir=tmp_path, job_timeout=2.5, standby=False)  # a cold process imports for longer than that
    runner = EmbeddedRunner(Store(settings), settings)
    runner.start()
    try:
        job = wait_job(store, job_id)
        assert job.status == "done", job.error
        started_to_finish = (job.finished_at - job.started_at).total_seconds()
        assert started_to_finish < 2.5
    finally:
        runner.stop()


def test_a_timed_out_inspection_fails_its_model_with_a_sentence(tmp_path):
    settings = load_settings(data_dir=tmp_path, job_timeout=0.01, standby=False)
    store = Store(settings)
    from viz_server_models import shipped_models

    record, job = store.add_model("shapes", shipped_models()["shapes_cnn"].read_bytes())
    runner = EmbeddedRunner(store, settings)
    runner.start()
    try:
        finished = wait_job(store, job.id)
        model = store.db.get(ModelRecord, record.id)
        assert finished.status == "failed" and "longer than" in finished.error
        assert model.status == "failed" and "longer than" in model.error
    finally:
        runner.stop()


def test_the_data_folder_is_private(tmp_path):
    store = ready_store_from_runner(tmp_path)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "viz.db").stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "blobs").stat().st_mode) == 0o700
    blob = next(path for path in (tmp_path / "blobs").rglob("*") if path.is_file())
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600 and stat.S_IMODE(blob.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert store.db.get(JobRecord, 1) is not None


def test_cancelling_a_queued_job_never_races_its_start(tmp_path):
    store = Store(load_settings(data_dir=tmp_path))
    from viz_server_models import shipped_models

    record, job = store.add_model("m", shipped_models()["digits_linear"].read_bytes())
    assert store.db.claim_job(job.id)  # a runner claimed it first
    store.request_cancel(job.id)
    after = store.db.get(JobRecord, job.id)
    assert after.status == "running" and after.cancel_requested  # asked to stop, not marked cancelled under its feet
