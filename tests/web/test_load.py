"""A bounded load test on loopback: 50 concurrent clients browse and submit jobs; no server errors allowed.

Latency figures are written to $VIZ_LOAD_REPORT (default: the test's temporary folder) as JSON.
"""

import contextlib
import json
import os
import statistics
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from tests_web_helpers import running_server, wait_models_ready

pytestmark = pytest.mark.slow  # real servers and job processes

CLIENTS = 50
ROUNDS = 6
DEADLINE_SECONDS = 180


class _Client:
    def __init__(self, base: str):
        self.base = base

    def get(self, path: str):
        return self._send(urllib.request.Request(self.base + path))

    def post_json(self, path: str, body: dict):
        request = urllib.request.Request(
            self.base + path, data=json.dumps(body).encode(), method="POST", headers={"Content-Type": "application/json", "X-Requested-With": "load-test"}
        )
        return self._send(request)

    def _send(self, request):
        started = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                status, body = response.status, response.read()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read()
        return status, time.perf_counter() - started, body


class _FlaskishClient:
    """Adapter so wait_models_ready can poll a real server over HTTP."""

    def __init__(self, client: _Client):
        self.client = client

    def get(self, path):
        status, _, body = self.client.get(path)
        data = json.loads(body)

        class Response:
            def get_json(self):
                return data

        return Response()


def test_fifty_concurrent_clients(tmp_path_factory):
    with running_server(tmp_path_factory.mktemp("load-data"), {"VIZ_SERVER_MAX_JOBS": "2"}) as base:
        client = _Client(base)
        models = {m["name"]: m["id"] for m in wait_models_ready(_FlaskishClient(client))}
        image_id = json.loads(client.get("/api/images")[2])[0]["id"]
        pages = ["/", "/models", f"/models/{models['shapes_cnn']}", "/jobs", "/plugins", "/api/models", "/api/jobs", "/run", "/reports"]
        results: list[tuple[str, int, float]] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + DEADLINE_SECONDS

        def user(number: int) -> None:
            own = _Client(base)
            for round_ in range(ROUNDS):
                if time.monotonic() > stop_at:
                    return
                path = pages[(number + round_) % len(pages)]
                try:
                    if round_ == 0 and number % 2 == 0:
                        status, seconds, _ = own.post_json("/api/jobs", {"technique": "saliency", "model_id": models["digits_linear"], "image_ids": [image_id]})
                        path = "POST /api/jobs"
                    else:
                        status, seconds, _ = own.get(path)
                except OSError as exc:
                    with lock:
                        errors.append(f"{path}: {exc}")
                    continue
                with lock:
                    results.append((path, status, seconds))

        threads = [threading.Thread(target=user, args=(i,)) for i in range(CLIENTS)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=DEADLINE_SECONDS + 30)
        wall = time.perf_counter() - started

    statuses = [status for _, status, _ in results]
    latencies = sorted(seconds for _, _, seconds in results)
    pages_only = sorted(seconds for path, _, seconds in results if not path.startswith("POST"))
    report = {
        "clients": CLIENTS,
        "requests": len(results),
        "wall_seconds": round(wall, 2),
        "server_errors": sum(status >= 500 for status in statuses),
        "connection_errors": len(errors),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * latencies[int(0.95 * (len(latencies) - 1))], 1),
        "pages_p95_ms": round(1000 * pages_only[int(0.95 * (len(pages_only) - 1))], 1),
        "job_submissions_accepted": sum(1 for path, status, _ in results if path.startswith("POST") and status == 202),
    }
    target = Path(os.environ.get("VIZ_LOAD_REPORT") or tmp_path_factory.mktemp("load") / "load.json")
    target.write_text(json.dumps(report, indent=2))
    print(json.dumps(report))
    assert errors == [], errors[:5]
    assert report["server_errors"] == 0
    assert all(status in (200, 202) for status in statuses), sorted(set(statuses))
    assert report["requests"] == CLIENTS * ROUNDS
    assert report["job_submissions_accepted"] == CLIENTS // 2


def test_concurrent_hostile_archives_cost_a_bounded_amount_of_memory(tmp_path):
    """Eight clients at once upload 3 MB archives whose entries inflate far beyond the ratio limit (and one that lies
    about its sizes): every upload is refused, and the server's peak memory grows by a small multiple of the uploads."""
    import io
    import struct
    import zipfile

    from viz_server.testing import server_process

    def bomb(lying: bool) -> bytes:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as zipped:
            for index in range(3):
                zipped.writestr(f"c/{index}.bmp", b"\0" * (1000 * 2**20 // 3))  # ~3 MB compressed, 1 GB inflated
        data = bytearray(buffer.getvalue())
        if lying:  # declare 1 KiB per entry in the central directory: the stream must be cut off while reading
            start = 0
            while (start := data.find(b"PK\x01\x02", start)) != -1:
                data[start + 24 : start + 28] = struct.pack("<I", 1024)
                start += 4
        return bytes(data)

    archives = [bomb(False), bomb(True)]
    # glibc gives each request thread its own malloc arena: under CPU load the eight uploads overlap and their freed
    # buffers stay spread over eight arenas (179 MiB measured). The bound is on our buffers, so the server runs as
    # the Dockerfile runs it, with two arenas.
    process, base = server_process(tmp_path, {"MALLOC_ARENA_MAX": "2"})
    try:

        def peak() -> int:
            for line in open(f"/proc/{process.pid}/status"):
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
            return 0

        # measure the uploads alone: after the shipped models' inspections have ended (their results are read here)
        # and after one ordinary upload request (the handler's own first-use imports)
        deadline = time.monotonic() + 180
        while any(model["status"] == "inspecting" for model in json.loads(urllib.request.urlopen(base + "/api/models", timeout=30).read())):
            assert time.monotonic() < deadline
            time.sleep(0.5)
        warm = urllib.request.Request(base + "/api/images", data=b"", method="POST", headers={"X-Requested-With": "tests"})
        with contextlib.suppress(urllib.error.HTTPError):
            urllib.request.urlopen(warm, timeout=30)
        before = peak()
        answers: list[int] = []

        def upload(index: int) -> None:
            data = archives[index % 2]
            boundary = "viz-boundary"
            body = (
                (f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="bomb{index}.zip"\r\nContent-Type: application/zip\r\n\r\n').encode()
                + data
                + f"\r\n--{boundary}--\r\n".encode()
            )
            request = urllib.request.Request(
                base + "/api/images",
                data=body,
                method="POST",
                headers={"X-Requested-With": "tests", "Content-Type": f"multipart/form-data; boundary={boundary}"},
            )
            try:
                urllib.request.urlopen(request, timeout=60)
                answers.append(200)
            except urllib.error.HTTPError as error:
                answers.append(error.code)

        threads = [threading.Thread(target=upload, args=(index,)) for index in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        grown = peak() - before
        print(f"8 concurrent hostile uploads of {len(archives[0]) / 2**20:.1f} MiB: peak memory grew by {grown / 2**20:.0f} MiB")
        assert answers == [400] * 8, answers
        assert grown < 8 * len(archives[0]) * 12, f"the server's peak memory grew by {grown / 2**20:.0f} MiB"
    finally:
        process.terminate()
        process.wait(timeout=30)
