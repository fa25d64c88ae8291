"""Server latency and job dispatch, on a real ``viz-server serve`` process over loopback.

1. Page and API latency (p50 / p95 of ``--requests`` sequential requests per path) with ``--reports`` stored
   reports of three finished jobs each. The jobs' results are a real saliency result computed once by the
   server and stored again for every report (so every page has real artifacts to list).
2. Job dispatch overhead: from ``POST /api/jobs`` until the API reports the job done, minus the seconds the
   technique itself ran (its provenance), for a small job (saliency on the shipped digits model, one image,
   checks off), one at a time and two at once (as an audit submits them). Measured with the warm standby
   job processes (the default, one per job slot) and with them turned off
   (``VIZ_SERVER_STANDBY=0``: a fresh process per job).

Run: ``python -m benchmarks.server [--reports 1000] [--requests 100] [--jobs 5]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
import urllib.request
from pathlib import Path

from benchmarks.common import software_line
from viz_server.testing import running_server

HEADERS = {"Content-Type": "application/json", "X-Requested-With": "benchmark"}
SMALL_JOB_PARAMS = {"sanity_check": False, "faithfulness": False}


@contextlib.contextmanager
def server(data_dir: Path, extra_env: dict | None = None):
    """A real server on loopback, yielded once the shipped models are inspected."""
    with running_server(data_dir, extra_env, timeout=120) as base:
        while any(model["status"] == "inspecting" for model in get(base, "/api/models")):
            time.sleep(0.2)
        yield base


def get(base: str, path: str):
    with urllib.request.urlopen(base + path, timeout=60) as response:
        body = response.read()
    return json.loads(body) if path.startswith("/api/") else body


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST", headers=HEADERS)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def run_job(base: str, body: dict, poll: float = 0.01) -> tuple[dict, float]:
    """Submit a job, poll until it ends; return the final job and the seconds from POST to seeing it done."""
    started = time.perf_counter()
    job_id = post(base, "/api/jobs", body)["id"]
    while True:
        job = get(base, f"/api/jobs/{job_id}")
        if job["status"] not in ("queued", "running"):
            return job, time.perf_counter() - started
        time.sleep(poll)


def small_job(base: str) -> dict:
    models = {model["name"]: model["id"] for model in get(base, "/api/models")}
    image_id = get(base, "/api/images")[0]["id"]
    return {"technique": "saliency", "model_id": models["digits_linear"], "image_ids": [image_id], "params": SMALL_JOB_PARAMS}


def dispatch_overheads(base: str, count: int, pause: float) -> list[float]:
    """Seconds each small job spends outside its technique (queueing, process start, loading, storing, polling)."""
    body = small_job(base)
    run_job(base, body)  # the first job also converts the model into the disk cache
    overheads = []
    for _ in range(count):
        time.sleep(pause)  # let the next standby process finish its imports, as between a person's clicks
        job, seconds = run_job(base, body)
        assert job["status"] == "done", job
        overheads.append(seconds - job["seconds"])
    return overheads


def burst_overheads(base: str, size: int, pause: float) -> list[float]:
    """``size`` small jobs submitted at once (as an audit does); each one's seconds outside its technique."""
    body = small_job(base)
    time.sleep(pause)
    started = {}
    for _ in range(size):
        started[post(base, "/api/jobs", body)["id"]] = time.perf_counter()
    overheads = []
    while started:
        for job_id in list(started):
            job = get(base, f"/api/jobs/{job_id}")
            if job["status"] not in ("queued", "running"):
                assert job["status"] == "done", job
                overheads.append(time.perf_counter() - started.pop(job_id) - job["seconds"])
        time.sleep(0.01)
    return overheads


def store_reports(data_dir: Path, template_job_id: int, count: int, jobs_per_report: int = 3) -> None:
    """``count`` reports of ``jobs_per_report`` finished jobs, each carrying the template job's stored result."""
    from viz_server.config import load_settings
    from viz_server.store import JobRecord, ReportRecord, Store

    store = Store(load_settings(data_dir=data_dir))
    template = store.db.get(JobRecord, template_job_id)
    with store.db.session() as session:
        for number in range(count):
            report = ReportRecord(kind="audit", title=f"audit {number}")
            session.add(report)
            session.flush()
            for _ in range(jobs_per_report):
                session.add(
                    JobRecord(
                        kind="technique",
                        technique=template.technique,
                        model_id=template.model_id,
                        report_id=report.id,
                        params=template.params,
                        image_ids=template.image_ids,
                        seed=0,
                        status="done",
                        progress_done=1,
                        progress_total=1,
                        progress_message="done",
                        attempts=1,
                        result=template.result,
                        arrays_sha256=template.arrays_sha256,
                        seconds=template.seconds,
                        started_at=template.started_at,
                        finished_at=template.finished_at,
                    )
                )
        session.commit()


def latencies(base: str, path: str, requests: int) -> tuple[float, float]:
    timings = []
    for _ in range(requests):
        started = time.perf_counter()
        get(base, path)
        timings.append(time.perf_counter() - started)
    timings.sort()
    return statistics.median(timings) * 1000, timings[int(0.95 * (len(timings) - 1))] * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args()
    print(software_line())
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        with server(data_dir) as base:
            models = {model["name"]: model["id"] for model in get(base, "/api/models")}
            image_ids = [image["id"] for image in get(base, "/api/images")][:4]
            template, _ = run_job(base, {"technique": "saliency", "model_id": models["shapes_cnn"], "image_ids": image_ids, "params": {}})
            assert template["status"] == "done", template
            warm = dispatch_overheads(base, args.jobs, pause=6.0)
            burst = burst_overheads(base, 2, pause=8.0)
        store_reports(data_dir, template["id"], args.reports)
        with server(data_dir, {"VIZ_SERVER_STANDBY": "0"}) as base:
            cold = dispatch_overheads(base, args.jobs, pause=0.5)
            cold_burst = burst_overheads(base, 2, pause=0.5)
            with urllib.request.urlopen(base + "/api/reports", timeout=60) as response:
                total = int(response.headers["X-Total-Count"])
            middle_page = max(1, (total // 50) // 2)  # a report from the middle of the list
            report_id = get(base, f"/api/reports?page={middle_page}")[0]["id"]
            job_id = get(base, f"/api/reports/{report_id}")["jobs"][0]["id"]
            paths = [
                "/",
                "/reports",
                f"/reports/{report_id}",
                "/jobs",
                f"/jobs/{job_id}",
                "/models",
                "/run",
                "/api/reports",
                f"/api/reports/{report_id}",
                "/api/jobs",
                f"/api/jobs/{job_id}",
            ]
            print(f"\n{total} stored reports ({3 * args.reports} jobs), {args.requests} sequential requests per path\n")
            print("| path | p50 ms | p95 ms |\n|---|---|---|")
            for path in paths:
                p50, p95 = latencies(base, path, args.requests)
                print(f"| `{path}` | {p50:.1f} | {p95:.1f} |", flush=True)
    print(f"\njob dispatch overhead (POST to done, minus the technique's own seconds), {args.jobs} jobs\n")
    print("| job process | median s | max s |\n|---|---|---|")
    print(f"| warm standby (default), one job at a time | {statistics.median(warm):.2f} | {max(warm):.2f} |")
    print(f"| warm standbys (default), two jobs at once | {statistics.median(burst):.2f} | {max(burst):.2f} |")
    print(f"| fresh process per job (VIZ_SERVER_STANDBY=0), one at a time | {statistics.median(cold):.2f} | {max(cold):.2f} |")
    print(f"| fresh process per job, two jobs at once | {statistics.median(cold_burst):.2f} | {max(cold_burst):.2f} |")


if __name__ == "__main__":
    main()
