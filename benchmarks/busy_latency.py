"""Page latency while the machine works: p50 / p95 of pages and API routes on a real ``viz-server serve``,
idle and while two jobs run at once (the embedded runner's default ``VIZ_SERVER_MAX_JOBS=2``; each job
process takes its share of the cores, the web process runs no model code).

Run: ``python -m benchmarks.busy_latency [--requests 60]``.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
from pathlib import Path

from benchmarks.common import software_line
from benchmarks.server import get, latencies, post, server

PATHS = ("/", "/models", "/run", "/jobs", "/plugins", "/api/models", "/api/jobs")
BUSY_PARAMS = {"epsilons": "0,2/255,8/255", "steps": 20}


def keep_two_jobs_running(base: str, stop: threading.Event) -> None:
    """Robustness curves on the shapes model, two at a time, until ``stop``."""
    models = {model["name"]: model["id"] for model in get(base, "/api/models")}
    image_ids = [image["id"] for image in get(base, "/api/images")][:6]
    body = {"technique": "robustness_curve", "model_id": models["shapes_cnn"], "image_ids": image_ids, "params": BUSY_PARAMS}
    running: list[int] = []
    while not stop.is_set():
        running = [job_id for job_id in running if get(base, f"/api/jobs/{job_id}")["status"] in ("queued", "running")]
        while len(running) < 2:
            running.append(post(base, "/api/jobs", body)["id"])
        stop.wait(0.5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=60)
    args = parser.parse_args()
    print(software_line())
    with tempfile.TemporaryDirectory() as folder, server(Path(folder)) as base:
        idle = {path: latencies(base, path, args.requests) for path in PATHS}
        stop = threading.Event()
        feeder = threading.Thread(target=keep_two_jobs_running, args=(base, stop), daemon=True)
        feeder.start()
        while sum(job["status"] == "running" for job in get(base, "/api/jobs")) < 2:
            stop.wait(0.2)
        busy = {path: latencies(base, path, args.requests) for path in PATHS}
        running = sum(job["status"] == "running" for job in get(base, "/api/jobs"))
        stop.set()
        feeder.join()
    print(f"\n{args.requests} sequential requests per path; busy = two robustness-curve jobs running ({running} at the end)\n")
    print("| path | idle p50 ms | idle p95 ms | busy p50 ms | busy p95 ms |\n|---|---|---|---|---|")
    for path in PATHS:
        print(f"| `{path}` | {idle[path][0]:.1f} | {idle[path][1]:.1f} | {busy[path][0]:.1f} | {busy[path][1]:.1f} |")


if __name__ == "__main__":
    main()
