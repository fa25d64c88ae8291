"""What starting viz-server costs: the light commands, and a server's first response.

1. ``viz-server --version`` and ``viz-server --help``: wall seconds and peak memory (max RSS) of the process, and
   whether it imported torch (``-X importtime``).
2. ``viz-server serve`` on an empty data folder: seconds from starting the process until ``/`` answers 200, then
   until ``/plugins`` (which lists every technique) answers; the web process's resident and peak memory after
   both. Job processes are separate and not counted: the web process never runs model code.

Each row is the median of ``--repeats`` fresh processes. Run: ``python -m benchmarks.startup [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

COMMAND = [sys.executable, "-m", "viz_server"]


def run_measured(argv: list[str], env: dict | None = None) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    _pid, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {process.returncode}")
    return seconds, usage.ru_maxrss / 1024


def imports_torch(argv: list[str]) -> bool:
    completed = subprocess.run([sys.executable, "-X", "importtime", *argv[1:]], capture_output=True, text=True, check=True)
    return any(line.rsplit("|", 1)[-1].strip() == "torch" for line in completed.stderr.splitlines() if line.startswith("import time:"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(url: str, deadline: float) -> float:
    while time.perf_counter() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=30) as response:
                if response.status == 200:
                    response.read()
                    return time.perf_counter()
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.02)
    raise TimeoutError(url)


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) MB of a running process, from /proc."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def serve_once() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as folder:
        port = free_port()
        env = {**os.environ, "VIZ_SERVER_DATA": folder, "VIZ_SERVER_CACHE": str(Path(folder) / "cache")}
        started = time.perf_counter()
        process = subprocess.Popen([*COMMAND, "serve", "--port", str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            first = wait_for(base + "/", started + 180)
            plugins = wait_for(base + "/plugins", started + 180)
            rss, peak = memory_mb(process.pid)
        finally:
            process.terminate()
            process.wait(timeout=60)
    return {"first": first - started, "plugins": plugins - started, "rss": rss, "peak": peak}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()} (this script imports no torch: a child's peak memory counts the parent's pages)"
    )
    print()
    print("| command | seconds (median) | peak MB | imports torch |")
    print("|---|---|---|---|")
    for flags in (["--version"], ["--help"]):
        argv = [*COMMAND, *flags]
        runs = [run_measured(argv) for _ in range(args.repeats)]
        seconds = statistics.median(run[0] for run in runs)
        peak = statistics.median(run[1] for run in runs)
        print(f"| `viz-server {' '.join(flags)}` | {seconds:.2f} | {peak:.0f} | {'yes' if imports_torch(argv) else 'no'} |")
    print()
    print("| `viz-server serve` | seconds (median) |")
    print("|---|---|")
    runs = [serve_once() for _ in range(args.repeats)]
    print(f"| start to first response of `/` | {statistics.median(run['first'] for run in runs):.2f} |")
    print(f"| start to first response of `/plugins` (every technique listed) | {statistics.median(run['plugins'] for run in runs):.2f} |")
    print(f"| web process resident memory after both, MB | {statistics.median(run['rss'] for run in runs):.0f} |")
    print(f"| web process peak memory, MB | {statistics.median(run['peak'] for run in runs):.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
