"""The default audit, end to end through a running server: every suite's techniques on the shipped shapes
model and four labeled pictures, from ``POST /api/audits`` until the report's last job is done.

Reports the wall seconds, the seconds each technique computed (its provenance), and the share of the job
slots' time spent outside model computation: 1 - (sum of technique seconds) / (wall x job slots), which counts
process hand-over, model loading, storing results and idle slots alike.

Run: ``python -m benchmarks.audit [--repeats 2]``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

from benchmarks.common import software_line
from benchmarks.server import get, post, server
from viz_server.rendering import png_bytes

JOB_SLOTS = 2  # the embedded runner's default VIZ_SERVER_MAX_JOBS


def upload_picture(base: str, name: str, data: bytes, image_set: str, label: str) -> int:
    """One labeled picture through ``POST /api/images`` (multipart, as the browser sends it)."""
    boundary = uuid.uuid4().hex
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"\r\n\r\n{value}\r\n'.encode() for field, value in (("set", image_set), ("label", label))
    ]
    parts.append(
        f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'.encode() + data + b"\r\n"
    )
    body = b"".join(parts) + f"--{boundary}--\r\n".encode()
    headers = {"Content-Type": f"multipart/form-data; boundary={boundary}", "X-Requested-With": "benchmark"}
    request = urllib.request.Request(base + "/api/images", data=body, method="POST", headers=headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())[0]["id"]


def four_pictures(base: str) -> list[int]:
    """One generated picture per class of the shapes model, uploaded with its label."""
    from viz_server_models import shapes

    data = shapes.make_dataset(4, seed=3, congruent_fraction=1.0)
    ids = []
    for index, (picture, label) in enumerate(zip(data.images, data.shape_labels)):
        ids.append(upload_picture(base, f"{index}.png", png_bytes(picture), "audit-benchmark", shapes.CLASSES[int(label)]))
    return ids


def run_audit(base: str, model_id: int, techniques: list[str], image_ids: list[int]) -> tuple[float, list[dict]]:
    started = time.perf_counter()
    report = post(base, "/api/audits", {"model_id": model_id, "techniques": techniques, "image_ids": image_ids})
    while True:  # the light job list, as often as a person's browser asks (the report page polls every 0.5 s)
        jobs = [job for job in get(base, "/api/jobs") if job["report_id"] == report["id"]]
        if all(job["status"] not in ("queued", "running") for job in jobs):
            return time.perf_counter() - started, jobs
        time.sleep(0.1)


def main() -> None:
    from viz_server.audit import audit_techniques
    from viz_server.techniques import SUITES

    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    print(software_line())
    techniques = audit_techniques("classification", list(SUITES), [])
    with tempfile.TemporaryDirectory() as folder, server(Path(folder)) as base:
        model_id = {model["name"]: model["id"] for model in get(base, "/api/models")}["shapes_cnn"]
        image_ids = four_pictures(base)
        runs = []
        for _ in range(args.repeats):
            time.sleep(3)  # let the standby job processes finish their imports, as between a person's clicks
            runs.append(run_audit(base, model_id, techniques, image_ids))
    print(f"\nDefault audit (suites {', '.join(SUITES)}: {len(techniques)} techniques) of shapes_cnn on 4 pictures, {JOB_SLOTS} job slots\n")
    print("| run | wall s | technique s (sum) | outside model computation | slowest technique |\n|---|---|---|---|---|")
    for number, (wall, jobs) in enumerate(runs, start=1):
        failed = [job["technique"] for job in jobs if job["status"] != "done"]
        assert not failed, f"jobs did not finish: {failed}"
        computed = sum(job["seconds"] or 0.0 for job in jobs)
        slowest = max(jobs, key=lambda job: job["seconds"] or 0.0)
        print(f"| {number} | {wall:.1f} | {computed:.1f} | {1 - computed / (wall * JOB_SLOTS):.0%} | {slowest['technique']} {slowest['seconds']:.1f} s |")
    wall, jobs = runs[-1]
    print("\n| technique | seconds |\n|---|---|")
    for job in jobs:
        print(f"| {job['technique']} | {job['seconds']:.2f} |")


if __name__ == "__main__":
    main()
