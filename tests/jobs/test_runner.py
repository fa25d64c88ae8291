"""The embedded runner: crash isolation with bounded retries, timeouts, and restarts that lose nothing."""

import os
import time

import pytest

from viz_server.config import load_settings
from viz_server.jobs.embedded import EmbeddedRunner
from viz_server.store import JobRecord, Store
from viz_server.web import create_app
from viz_server_models import shipped_models

pytestmark = pytest.mark.slow  # real servers and job processes


@pytest.fixture(scope="module")
def ready_data(tmp_path_factory):
    """A data folder whose shipped models are already inspected (by a first server, then stopped)."""
    data_dir = tmp_path_factory.mktemp("runner-data")
    app = create_app(load_settings(data_dir=data_dir))
    store = app.extensions["viz_store"]
    deadline = time.monotonic() + 120
    while any(model.status == "inspecting" for model in store.models()):
        assert time.monotonic() < deadline
        time.sleep(0.2)
    app.extensions["viz_dispatcher"].stop()
    return data_dir


def _runner(data_dir, **settings):
    settings = load_settings(data_dir=data_dir, **settings)
    store = Store(settings)
    runner = EmbeddedRunner(store, settings)
    runner.start()
    return store, runner


def _job(store: Store, technique: str = "saliency") -> int:
    model = next(model for model in store.models() if model.name == "shapes_cnn")
    image = store.images("samples")[0]
    return store.create_job(technique, model.id, [image.id], {}).id


def _wait(store: Store, job_id: int, states=("done", "failed", "cancelled"), timeout=120.0) -> JobRecord:
    deadline = time.monotonic() + timeout
    while True:
        job = store.db.get(JobRecord, job_id)
        if job.status in states:
            return job
        assert time.monotonic() < deadline, f"job {job_id} stuck in {job.status}"
        time.sleep(0.05)


def _wait_idle(runner: EmbeddedRunner, count: int) -> None:
    """Until ``count`` workers are idle (the runner sees a job finish at its next poll)."""
    deadline = time.monotonic() + 10
    while len(runner.idle) < count:
        assert time.monotonic() < deadline
        time.sleep(0.05)


def _kill_when_running(runner: EmbeddedRunner, store: Store, job_id: int) -> None:
    _wait(store, job_id, states=("running",))
    deadline = time.monotonic() + 30
    while job_id not in runner.running:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    runner.running[job_id].process.kill()


def test_killed_job_is_failed_and_the_next_job_runs(ready_data):
    store, runner = _runner(ready_data, max_jobs=1, job_retries=0)
    try:
        doomed, following = _job(store), _job(store)
        runner.submit(doomed)
        _kill_when_running(runner, store, doomed)
        failed = _wait(store, doomed)
        assert failed.status == "failed" and "process died" in failed.error and failed.attempts == 1
        assert _wait(store, following).status == "done"
    finally:
        runner.stop()


def test_crashed_job_is_retried_within_its_bound(ready_data):
    store, runner = _runner(ready_data, max_jobs=1, job_retries=1)
    try:
        job_id = _job(store)
        _kill_when_running(runner, store, job_id)
        finished = _wait(store, job_id)
        assert finished.status == "done" and finished.attempts == 2
    finally:
        runner.stop()


def test_timeout_stops_a_job(ready_data):
    store, runner = _runner(ready_data, job_timeout=0.5)
    try:
        job = _wait(store, _job(store, "attribution_ranking"))  # seconds of work: saliency on one picture can end within 0.5 s
        assert job.status == "failed" and "longer than 0.5 s" in job.error
    finally:
        runner.stop()


def test_restart_keeps_results_and_requeues_interrupted_jobs(ready_data):
    store, runner = _runner(ready_data)
    finished = _wait(store, _job(store))
    from viz_server.store import ReportRecord

    report = store.db.add(ReportRecord(kind="audit", title="before the restart"))
    store.db.update_job(finished.id, report_id=report.id)
    runner.stop()
    interrupted = _job(store)
    store.db.update_job(interrupted, status="running", attempts=1)  # the server died while it ran

    app = create_app(load_settings(data_dir=ready_data))  # a new server on the same data
    try:
        client = app.test_client()
        kept = client.get(f"/api/jobs/{finished.id}").get_json()
        assert kept["status"] == "done"
        assert client.get(kept["result"]["artifacts"][1]["url"]).status_code == 200
        kept_report = client.get(f"/api/reports/{report.id}").get_json()
        assert kept_report["title"] == "before the restart" and kept_report["jobs"][0]["status"] == "done"
        assert client.get(f"/reports/{report.id}/export.html").status_code == 200
        assert _wait(app.extensions["viz_store"], interrupted).status == "done"
        assert len([m for m in client.get("/api/models").get_json() if m["shipped"]]) == len(shipped_models())  # not registered twice
    finally:
        app.extensions["viz_dispatcher"].stop()


def test_jobs_start_in_warm_workers_that_stay_warm_for_the_next_job(ready_data):
    store, runner = _runner(ready_data, max_jobs=2)
    try:
        assert len(runner.idle) == 2  # one per job slot
        first, second = (worker.process for worker in runner.idle)
        jobs = [_job(store), _job(store)]  # a burst: both start warm
        runner.submit(jobs[0])
        assert all(_wait(store, job_id).status == "done" for job_id in jobs)
        assert all((ready_data / "logs" / f"job-{job_id}.log").exists() for job_id in jobs)  # output moved to the job logs
        _wait_idle(runner, 2)
        assert {worker.process.pid for worker in runner.idle} == {first.pid, second.pid}  # the same processes wait for more
        assert all(worker.process.poll() is None for worker in runner.idle)

        following = _job(store)  # the same model again: a worker that holds it takes it and does not load it again
        assert _wait(store, following).status == "done"
        assert "kept in memory from this process's previous job" in (ready_data / "logs" / f"job-{following}.log").read_text()
        _wait_idle(runner, 2)
        assert {worker.process.pid for worker in runner.idle} == {first.pid, second.pid}  # no process was started meanwhile
    finally:
        runner.stop()
    assert all(worker.process.poll() is not None for worker in runner.idle)  # stop() leaves no worker behind


def test_idle_workers_never_outnumber_the_job_slots_and_retire_after_their_share(ready_data, monkeypatch):
    from viz_server.jobs import embedded

    monkeypatch.setattr(embedded, "JOBS_PER_WORKER", 1)
    store, runner = _runner(ready_data, max_jobs=1)
    try:
        worker = runner.idle[0].process
        assert _wait(store, _job(store)).status == "done"
        assert worker.wait(timeout=30) == 0  # it did its share and exited by itself
        assert len(runner.idle) == 1 and runner.idle[0].process.pid != worker.pid
    finally:
        runner.stop()


def test_a_worker_whose_job_was_refused_stays_warm_and_one_that_may_be_broken_retires(ready_data):
    """A user error (here, a picture that does not exist) leaves the process as good as new: it takes the next job,
    so a burst of bad requests costs no cold starts. An internal error or exhausted memory may leave it broken."""
    from viz_server.jobs.failures import process_may_be_broken

    store, runner = _runner(ready_data, max_jobs=1)
    try:
        worker = runner.idle[0].process
        model = next(model for model in store.models() if model.name == "shapes_cnn")
        failing = store.create_job("saliency", model.id, [10**6], {}).id  # its image does not exist
        refused = _wait(store, failing)
        assert refused.status == "failed" and not process_may_be_broken(refused.error), refused.error
        assert _wait(store, _job(store)).status == "done"
        _wait_idle(runner, 1)
        assert runner.idle[0].process.pid == worker.pid and worker.poll() is None
    finally:
        runner.stop()
    assert process_may_be_broken("internal error while running the job (ValueError: x); please report it.")
    assert process_may_be_broken("the job ran out of memory; use fewer or smaller images.")
    assert not process_may_be_broken("there is no image 1000000; pick one from the list.") and not process_may_be_broken(None)


def test_workers_that_die_before_their_first_job_are_restarted_with_a_growing_pause(ready_data, monkeypatch):
    import subprocess
    import sys

    settings = load_settings(data_dir=ready_data, max_jobs=1)
    runner = EmbeddedRunner(Store(settings), settings)
    started = []

    def broken_start(arguments, stdin, stdout):  # a worker whose imports fail
        started.append(time.monotonic())
        return subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"], stdin=stdin, stdout=stdout)

    monkeypatch.setattr(runner, "_start", broken_start)
    runner.start()
    try:
        time.sleep(4)
    finally:
        runner.stop()
    assert 2 <= len(started) <= 4  # at 0 s, then after pauses of 1 s and 2 s: not 40 restarts at every poll
    assert all(later - earlier >= 0.9 for earlier, later in zip(started, started[1:]))


def test_a_dead_standby_falls_back_to_a_fresh_process(ready_data):
    store, runner = _runner(ready_data, max_jobs=1)
    try:
        runner.idle[0].process.kill()
        runner.idle[0].process.wait(timeout=10)
        assert _wait(store, _job(store)).status == "done"
    finally:
        runner.stop()


def test_standby_can_be_turned_off(ready_data):
    store, runner = _runner(ready_data, standby=False)
    try:
        assert runner.idle == []
        assert _wait(store, _job(store)).status == "done"
        assert runner.idle == []
    finally:
        runner.stop()


def test_a_job_process_takes_its_share_of_the_cores_for_torch_and_onnxruntime():
    """Two concurrent jobs on this machine's cores: each process sets cores // 2 threads, once, in both runtimes."""
    import subprocess
    import sys

    from viz_server.jobs.threads import share

    probe = (
        "from viz_server.config import load_settings; from viz_server.jobs import threads; threads.fit(2, load_settings().threads);"
        "import torch; from viz_server.model.runtime import make_session; from viz_server_models import shipped_models; import onnx;"
        "session = make_session(onnx.load(str(shipped_models()['digits_linear'])));"
        "print(torch.get_num_threads(), session.get_session_options().intra_op_num_threads, session.get_session_options().inter_op_num_threads)"
    )
    env = {key: value for key, value in os.environ.items() if key != "VIZ_SERVER_THREADS"}
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120, check=True).stdout.split()
    assert printed == [str(share(2)), str(share(2)), "1"]
    forced = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env={**env, "VIZ_SERVER_THREADS": "1"}, timeout=120, check=True)
    assert forced.stdout.split()[:2] == ["1", "1"]


def test_graceful_stops_requeue_a_running_job_without_using_its_retry(ready_data):
    """Two ordinary restarts (SIGTERM runs ``stop``) while a job runs: each time it goes back to the queue with its
    attempt given back, and the third server runs it to the end within its retries."""
    model = next(model for model in Store(load_settings(data_dir=ready_data)).models() if model.name == "shapes_cnn")
    store = Store(load_settings(data_dir=ready_data))
    job_id = store.create_job("class_visualization", model.id, [], {"steps": 400}).id
    for restart in range(2):
        store, runner = _runner(ready_data, job_retries=1)
        try:
            running = _wait(store, job_id, states=("running",))
            deadline = time.monotonic() + 60
            while store.db.get(JobRecord, job_id).started_at is None and time.monotonic() < deadline:  # its work has begun
                time.sleep(0.05)
            assert running.attempts == 1, (restart, running.attempts)
        finally:
            runner.stop()
        stopped = store.db.get(JobRecord, job_id)
        assert (stopped.status, stopped.attempts, stopped.progress_message) == ("queued", 0, "requeued: the server stopped")
    store, runner = _runner(ready_data, job_retries=1)
    try:
        assert _wait(store, job_id, timeout=300).status == "done"
    finally:
        runner.stop()
