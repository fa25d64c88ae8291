"""Scale-out for real: PostgreSQL, Redis, a `viz-server serve` and two `viz-server worker` processes on one shared
database and data folder. A batch of jobs runs; a worker is killed mid-job; every job ends once, with its result.
Then a short load test against the same setup. Everything listens on 127.0.0.1 and stops by itself."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REDIS = shutil.which("redis-server")
POSTGRES_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"))), None) if Path("/usr/lib/postgresql").is_dir() else None
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        (REDIS is None or POSTGRES_BIN is None) and not os.environ.get("CI"), reason="redis-server and postgresql are not installed (CI installs them)"
    ),
]
HEADERS = {"X-Requested-With": "tests", "Content-Type": "application/json"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def as_postgres(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run its tools as the postgres user when we are root."""
    return ["runuser", "-u", "postgres", "--", *command] if os.geteuid() == 0 else command


def call(base: str, path: str, body: dict | None = None, timeout: float = 30) -> tuple[int, dict | list | None]:
    request = urllib.request.Request(
        base + path, data=json.dumps(body).encode() if body is not None else None, headers=HEADERS, method="POST" if body is not None else "GET"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"null")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    assert REDIS and POSTGRES_BIN, "redis-server and postgresql must be installed for the scale-out test"
    root = tmp_path_factory.mktemp("scale-out")
    processes: list[subprocess.Popen] = []
    pg_root = Path(tempfile.mkdtemp(prefix="viz-postgres-"))  # outside pytest's private folder: the postgres user must reach it
    pg_data, pg_socket = pg_root / "data", pg_root / "socket"
    pg_data.mkdir()
    pg_socket.mkdir()
    if os.geteuid() == 0:
        for folder in (pg_root, pg_data, pg_socket):
            shutil.chown(folder, "postgres")
    pg_port, redis_port, web_port = free_port(), free_port(), free_port()
    subprocess.run(as_postgres([str(POSTGRES_BIN / "initdb"), "-D", str(pg_data), "-A", "trust", "-U", "viz", "--no-sync"]), check=True, capture_output=True)
    subprocess.run(
        as_postgres(
            [
                str(POSTGRES_BIN / "pg_ctl"),
                "-D",
                str(pg_data),
                "-w",
                "-l",
                str(pg_data / "log"),
                "-o",
                f"-p {pg_port} -k {pg_socket} -c listen_addresses=127.0.0.1 -c fsync=off",
                "start",
            ]
        ),
        check=True,
        capture_output=True,
    )
    subprocess.run(as_postgres([str(POSTGRES_BIN / "createdb"), "-h", "127.0.0.1", "-p", str(pg_port), "-U", "viz", "viz"]), check=True, capture_output=True)
    processes.append(
        subprocess.Popen(
            [REDIS, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
    )
    data = root / "shared-data"
    env = {
        **os.environ,
        "VIZ_SERVER_DATA": str(data),
        "VIZ_SERVER_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VIZ_SERVER_DATABASE_URL": f"postgresql+psycopg://viz@127.0.0.1:{pg_port}/viz",
        "VIZ_SERVER_JOB_LEASE": "3",
        "VIZ_SERVER_SHARD_PICTURES": "64",
    }
    logs = root / "logs"
    logs.mkdir()

    def worker(name: str) -> subprocess.Popen:
        log = open(logs / f"{name}.log", "wb")
        return subprocess.Popen(
            [sys.executable, "-m", "viz_server.cli", "worker", "--concurrency", "1"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    server_log = open(logs / "server.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "viz_server.cli", "serve", "--port", str(web_port)], env=env, stdout=server_log, stderr=subprocess.STDOUT)
    workers = {"a": worker("a"), "b": worker("b")}
    processes += [server, *workers.values()]
    base = f"http://127.0.0.1:{web_port}"
    try:  # everything started is stopped below, whatever fails from here on
        deadline = time.monotonic() + 600  # readiness, not a race: a loaded machine may take minutes to import torch
        while True:
            try:
                urllib.request.urlopen(base + "/api/models", timeout=2)
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, (logs / "server.log").read_text()[-2000:]
                time.sleep(0.3)
        yield {"base": base, "workers": workers, "logs": logs, "database_url": env["VIZ_SERVER_DATABASE_URL"]}
    finally:
        for process in processes:
            if process.poll() is None:
                try:
                    os.killpg(process.pid, signal.SIGTERM) if process in workers.values() else process.terminate()
                except ProcessLookupError:
                    pass
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        subprocess.run(as_postgres([str(POSTGRES_BIN / "pg_ctl"), "-D", str(pg_data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(pg_root, ignore_errors=True)


def ready_models(base: str) -> dict[str, dict]:
    deadline = time.monotonic() + 240
    while True:
        _, models = call(base, "/api/models")
        if all(model["status"] != "inspecting" for model in models):
            return {model["name"]: model for model in models}
        assert time.monotonic() < deadline, models
        time.sleep(0.5)


def upload_set(base: str, archive: bytes, name: str) -> list[dict]:
    boundary = "viz-server-test-boundary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\nContent-Type: application/zip\r\n\r\n'.encode()
        + archive
        + f"\r\n--{boundary}--\r\n".encode()
    )
    headers = {"X-Requested-With": "tests", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    with urllib.request.urlopen(urllib.request.Request(base + "/api/images", data=body, headers=headers, method="POST"), timeout=120) as response:
        assert response.status == 201
        return json.loads(response.read())


def test_a_whole_set_audit_split_between_two_workers_equals_one_process(cluster, tmp_path):
    """The dataset suite on 960 labeled pictures, its predictions cut into 15 shards of 64 that both workers run;
    every figure equals a run in this one process, and the jobs of the audit computed the predictions once."""
    import io
    import zipfile

    from sqlalchemy import create_engine, text

    from viz_server import load_model
    from viz_server.runner import run_technique
    from viz_server_models import shapes, shipped_models

    base = cluster["base"]
    models = ready_models(base)
    folder = tmp_path / "set"
    shapes.write_image_set(folder, per_class=240, seed=11, masks=True)
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as bundle:
        for path in sorted(folder.rglob("*.png")):
            bundle.write(path, path.relative_to(folder).as_posix())
    images = upload_set(base, archive.getvalue(), "sharded.zip")
    pictures = [image for image in images if image["label"]]
    assert len(pictures) == 960 and all(image["has_mask"] for image in pictures)
    suite = ["class_accuracy", "calibration", "shortcut_scan"]
    status, report = call(base, "/api/audits", {"model_id": models["shapes_planted"]["id"], "techniques": suite, "image_ids": [p["id"] for p in pictures]})
    assert status == 202, report
    job_ids = [job["id"] for job in report["jobs"]]
    deadline = time.monotonic() + 400
    while True:
        jobs = [call(base, f"/api/jobs/{job_id}")[1] for job_id in job_ids]
        if all(job["status"] in ("done", "failed", "cancelled") for job in jobs):
            break
        assert time.monotonic() < deadline, [(job["technique"], job["status"], job["progress"]) for job in jobs]
        time.sleep(0.5)
    assert all(job["status"] == "done" for job in jobs), [(job["technique"], job["error"]) for job in jobs]

    engine = create_engine(cluster["database_url"])
    with engine.connect() as connection:
        shards = connection.execute(text("SELECT start, stop, status, attempts, runner FROM shards ORDER BY start")).all()
    engine.dispose()
    assert [(row.start, row.stop, row.status) for row in shards] == [(start, start + 64, "done") for start in range(0, 960, 64)]
    assert all(row.attempts == 1 for row in shards)  # once for the three jobs of the audit
    by_process = {runner: sum(row.runner == runner for row in shards) for runner in {row.runner for row in shards}}
    print(f"shards by process: {by_process}")
    assert len(by_process) == 2, by_process  # both workers took part

    model = load_model(shipped_models()["shapes_planted"])
    by_id = {image["id"]: image for image in pictures}
    for job in jobs:
        chosen = [by_id[image_id] for image_id in job["image_ids"]]
        reference = run_technique(
            job["technique"],
            model,
            [(image["name"], (folder / image["label"] / image["name"]).read_bytes()) for image in chosen],
            job["params"],
            seed=job["seed"],
            labels=[image["label"] for image in chosen],
            masks=[(folder / image["label"] / image["name"].replace(".png", ".mask.png")).read_bytes() for image in chosen],
        )
        assert job["result"]["metrics"] == json.loads(json.dumps(reference.to_json()["metrics"])), job["technique"]


def test_a_batch_survives_a_killed_worker_and_every_job_ends_once(cluster):
    base = cluster["base"]
    models = ready_models(base)
    assert models["shapes_cnn"]["status"] == "ready", (cluster["logs"] / "a.log").read_text()[-2000:]
    _, images = call(base, "/api/images")
    jobs = []
    for index in range(8):
        body = (
            {"technique": "class_visualization", "model_id": models["shapes_cnn"]["id"], "params": {"steps": 800, "target": str(index % 4)}}
            if index % 2 == 0
            else {"technique": "saliency", "model_id": models["shapes_cnn"]["id"], "image_ids": [images[index % len(images)]["id"]]}
        )
        status, job = call(base, "/api/jobs", body)
        assert status == 202, job
        jobs.append(job["id"])
    deadline = time.monotonic() + 120
    while sum(call(base, f"/api/jobs/{job_id}")[1]["status"] == "running" for job_id in jobs) < 2:  # both workers busy
        assert time.monotonic() < deadline
        time.sleep(0.1)
    killed = cluster["workers"]["a"]
    os.killpg(killed.pid, signal.SIGKILL)  # the worker and its pool processes, mid-job
    killed.wait(timeout=10)
    finished = {}
    deadline = time.monotonic() + 300
    while len(finished) < len(jobs):
        for job_id in jobs:
            _, job = call(base, f"/api/jobs/{job_id}")
            if job["status"] in ("done", "failed", "cancelled"):
                finished[job_id] = job
        assert time.monotonic() < deadline, [call(base, f"/api/jobs/{j}")[1]["status"] for j in jobs]
        time.sleep(0.3)
    assert all(job["status"] == "done" and job["result"]["artifacts"] for job in finished.values()), {j: (x["status"], x["error"]) for j, x in finished.items()}
    attempts = sorted(job["attempts"] for job in finished.values())
    assert attempts[-1] == 2 and attempts.count(2) <= 2, attempts  # the killed worker's job ran again once, elsewhere
    assert cluster["workers"]["b"].poll() is None


def test_load_on_the_scaled_out_setup(cluster):
    """20 clients for 15 s: pages and the API while jobs run on the remaining worker; no server error."""
    base = cluster["base"]
    models = ready_models(base)
    _, images = call(base, "/api/images")
    latencies: list[float] = []
    errors: list[str] = []
    stop = time.monotonic() + 15

    def client(index: int) -> None:
        paths = ["/", "/models", "/jobs", "/reports", "/api/models", "/api/jobs", "/api/reports", "/plugins"]
        step = 0
        while time.monotonic() < stop:
            started = time.perf_counter()
            try:
                if step % 10 == 9:
                    status, _ = call(
                        base,
                        "/api/jobs",
                        {"technique": "saliency", "model_id": models["shapes_cnn"]["id"], "image_ids": [images[0]["id"]], "params": {"sanity_check": False}},
                    )
                else:
                    with urllib.request.urlopen(base + paths[(index + step) % len(paths)], timeout=30) as response:
                        response.read()
                        status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError as error:
                errors.append(str(error))
                status = 0
            latencies.append(time.perf_counter() - started)
            if status >= 500 or status == 0:
                errors.append(f"status {status}")
            step += 1

    threads = [threading.Thread(target=client, args=(index,)) for index in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    p95 = statistics.quantiles(latencies, n=20)[-1]
    print(f"scale-out load: {len(latencies)} requests, p95 {p95 * 1000:.0f} ms, errors {len(errors)}")
    assert not errors and len(latencies) > 100


def test_postgresql_answers_64_bit_ids_and_refuses_nul_in_one_sentence(cluster):
    """The id columns are 64-bit (an earlier version's 32-bit ones are widened on start), so an id beyond 2^31 is
    a 404 like any unknown record, not a 500; a NUL, which PostgreSQL refuses in text, is a 400."""
    from sqlalchemy import BigInteger, create_engine, inspect, text

    from viz_server.store.database import Database

    base = cluster["base"]
    for path in ("/api/jobs/2147483648", "/api/models/9223372036854775807", "/api/reports/4294967296"):
        status, body = call(base, path)
        assert status == 404, (path, status, body)
    assert call(base, "/api/jobs/2147483648/cancel", {})[0] == 404
    status, body = call(base, "/api/images?set=a%00b")
    assert status == 400 and "control character" in body["error"]

    engine = create_engine(cluster["database_url"])
    with engine.begin() as connection:  # as an earlier version made it
        connection.execute(text("ALTER TABLE jobs ALTER COLUMN model_id TYPE INTEGER"))
    Database(cluster["database_url"])
    columns = {column["name"]: column["type"] for column in inspect(engine).get_columns("jobs")}
    assert isinstance(columns["id"], BigInteger) and isinstance(columns["model_id"], BigInteger)
    engine.dispose()


def test_postgresql_serializes_deleting_a_model_and_submitting_jobs_on_it(cluster, tmp_path):
    """With PostgreSQL's row locks and foreign keys: a model with jobs is deleted with them; racing deletes and
    submissions end in a deletion or a refusal, never an orphan job or an error other than a sentence."""
    from test_orphans import add_model, orphans, race

    from viz_server.config import load_settings
    from viz_server.store import Store

    store = Store(load_settings(data_dir=tmp_path, database_url=cluster["database_url"]))
    model_id = add_model(store, "pg-with-jobs")
    for job in store.jobs(limit=5000):
        if job.model_id == model_id:
            store.db.update_job(job.id, status="cancelled")
    store.create_job("saliency", model_id, [], {})
    store.db.update_job(store.jobs(limit=1)[0].id, status="done")
    store.delete("model", model_id)
    assert model_id not in {record.id for record in store.models()}
    outcomes = [outcome for round_number in range(8) for outcome in race(store, add_model(store, f"pg-race-{round_number}"), submitters=2)]
    assert not orphans(store), outcomes
    assert len(outcomes) == 24 and outcomes.count("deleted") + outcomes.count("kept") == 8, outcomes
