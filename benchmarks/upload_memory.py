"""Peak memory of the web process while many clients upload the largest picture allowed at once.

The picture: a 16-bit grayscale PNG just under the pixel limit (6,300 x 6,300 = 39.7 Mpx; it compresses to about
77 KB, so the upload itself is small). The server runs as `viz-server serve` in its own process; its resident
memory is read from /proc before, at its peak (VmHWM) and after. Run:
``python -m benchmarks.upload_memory [--clients 3,16] [--side 6300]``.
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from viz_server.testing import server_process


def largest_picture(side: int) -> bytes:
    values = (np.add.outer(np.arange(side), np.arange(side)) % 65536).astype(np.uint16)
    buffer = io.BytesIO()
    Image.fromarray(values).save(buffer, format="PNG", optimize=False)  # mode I;16
    return buffer.getvalue()


def memory(pid: int) -> dict[str, float]:
    """The process's resident memory now and at its peak, in MiB."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {key: int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM")}


def upload(base: str, data: bytes, name: str, outcome: list) -> None:
    boundary = "viz-memory-boundary"
    body = b"".join(
        [
            f'--{boundary}\r\nContent-Disposition: form-data; name="images"; filename="{name}"\r\nContent-Type: image/png\r\n\r\n'.encode(),
            data,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    request = urllib.request.Request(
        base + "/api/images", data=body, method="POST", headers={"X-Requested-With": "bench", "Content-Type": f"multipart/form-data; boundary={boundary}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=600) as response:
            outcome.append(response.status)
    except urllib.error.HTTPError as error:
        outcome.append(error.code)


def measure(clients: int, data: bytes) -> dict:
    """A fresh server; ``clients`` uploads of ``data`` at once, then each picture's thumbnail once."""
    with tempfile.TemporaryDirectory() as folder:
        process, base = server_process(Path(folder), {"VIZ_SERVER_STANDBY": "0"})
        try:
            time.sleep(2.0)
            before = memory(process.pid)
            outcome: list = []
            threads = [threading.Thread(target=upload, args=(base, data, f"big-{index}.png", outcome)) for index in range(clients)]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            images = json.load(urllib.request.urlopen(base + "/api/images"))
            for image in images:
                if image["name"].startswith("big-"):
                    urllib.request.urlopen(base + image["thumbnail"]).read()
            after = memory(process.pid)
            return {
                "clients": clients,
                "statuses": sorted(set(outcome)),
                "seconds": seconds,
                "before": before["VmRSS"],
                "peak": after["VmHWM"],
                "after": after["VmRSS"],
            }
        finally:
            process.terminate()
            process.wait(timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", default="3,16")
    parser.add_argument("--side", type=int, default=6300)
    args = parser.parse_args()
    data = largest_picture(args.side)
    print(f"picture: {args.side} x {args.side} 16-bit PNG, {len(data) / 1024:.0f} KiB")
    print()
    print("| clients at once | answers | seconds | web process before (MiB) | peak (MiB) | after (MiB) |")
    print("|---|---|---|---|---|---|")
    for clients in (int(part) for part in args.clients.split(",")):
        found = measure(clients, data)
        print(
            f"| {clients} | {', '.join(map(str, found['statuses']))} | {found['seconds']:.1f} | {found['before']:.0f} | {found['peak']:.0f} | {found['after']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
