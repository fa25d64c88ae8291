"""The dataset suite through Celery workers: one worker process against two, the set's predictions cut into
shards (``viz_server.jobs.shards``) that the two run in parallel. Each worker gets its share of the cores (one
worker: all of them; two: half each), so both rows use the same machine.

Needs ``redis-server`` (Debian's package). Run: ``python -m benchmarks.sharded_suite [--pictures 5000]``. Prints a
Markdown table: seconds from submitting the audit to its last job's end (the second of two audits on the same
workers, so every worker has its model loaded), and how many shards each process ran.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TECHNIQUES = ["class_accuracy", "calibration", "shortcut_scan"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def audit_seconds(store, dispatcher, model_id: int, image_ids: list[int]) -> float:
    """Submit the dataset suite on these pictures; seconds until every job of it ended (each must end done)."""
    from viz_server.store import JobRecord
    from viz_server.web.actions import start_audit

    started = time.perf_counter()
    report = start_audit(store, dispatcher, model_id, TECHNIQUES, image_ids)
    while True:
        jobs = store.jobs(report_id=report.id, with_results=False)
        if all(job.status in ("done", "failed", "cancelled") for job in jobs):
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - started
    failed = [(job.technique, job.error) for job in jobs if job.status != "done"]
    assert not failed, failed
    assert all(isinstance(store.db.get(JobRecord, job.id).result, dict) for job in jobs)
    return seconds


def one_setup(workers: int, pictures: list[tuple], cores: int) -> tuple[float, dict[str, int]]:
    from sqlalchemy import select

    from viz_server.config import load_settings
    from viz_server.jobs.celery_app import CeleryDispatcher
    from viz_server.store import ShardRecord, Store
    from viz_server_models import shipped_models

    root = Path(tempfile.mkdtemp(prefix="viz-sharded-"))
    redis_port = free_port()
    env = {
        **os.environ,
        "VIZ_SERVER_DATA": str(root / "data"),
        "VIZ_SERVER_BROKER_URL": f"redis://127.0.0.1:{redis_port}/0",
        "VIZ_SERVER_THREADS": str(max(1, cores // workers)),
    }
    processes = [
        subprocess.Popen(
            [shutil.which("redis-server"), "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    ]
    try:
        settings = load_settings(data_dir=root / "data", broker_url=env["VIZ_SERVER_BROKER_URL"])
        store = Store(settings)
        for _ in range(workers):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "viz_server.cli", "worker", "--concurrency", "1"],
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
            )
        dispatcher = CeleryDispatcher(settings)
        record, inspection = store.add_model("shapes_cnn", shipped_models()["shapes_cnn"].read_bytes())
        dispatcher.submit(inspection.id)
        while store.db.get(type(record), record.id).status == "inspecting":
            time.sleep(0.1)
        ids = [image.id for image in store.add_images(pictures)]
        audit_seconds(store, dispatcher, record.id, ids[::-1])  # warm-up: every worker loads the model (another order: other shards)
        seconds = audit_seconds(store, dispatcher, record.id, ids)
        ran: dict[str, int] = {}
        with store.db.session() as session:  # the measured audit's shards: the newest key
            newest = session.execute(select(ShardRecord.key).order_by(ShardRecord.id.desc()).limit(1)).scalar()
            for (runner,) in session.execute(select(ShardRecord.runner).where(ShardRecord.key == newest)):
                ran[runner] = ran.get(runner, 0) + 1
        return seconds, ran
    finally:
        for process in processes[1:]:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        processes[0].terminate()
        for process in processes:
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pictures", type=int, default=5000)
    args = parser.parse_args()
    if shutil.which("redis-server") is None:
        raise SystemExit("this benchmark needs redis-server (apt-get install redis-server).")
    from viz_server.image_sets import pair_masks, read_image_set
    from viz_server.jobs.threads import share
    from viz_server_models import shapes

    cores = share(1)
    with tempfile.TemporaryDirectory() as folder:
        shapes.write_image_set(folder, per_class=args.pictures // len(shapes.CLASSES), seed=7, masks=True)
        pictures = [(name, data, "bench", label, mask) for name, data, label, mask in pair_masks(read_image_set(folder))]
    print("| pictures | workers (threads each) | suite (s) | shards run by each process | ratio to one worker |")
    print("|---|---|---|---|---|")
    baseline = None
    for workers in (1, 2):
        seconds, by_process = one_setup(workers, pictures, cores)
        baseline = baseline or seconds
        print(
            f"| {len(pictures)} | {workers} ({max(1, cores // workers)}) | {seconds:.1f} | {' + '.join(str(n) for n in sorted(by_process.values(), reverse=True)) or '—'} | {seconds / baseline:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
