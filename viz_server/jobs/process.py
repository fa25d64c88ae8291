"""Entry point of one job process: ``python -m viz_server.jobs.process JOB_ID`` or ``... --standby``.

The embedded runner starts one of these per job, so a model that crashes onnxruntime or torch takes down
only this process. Settings come from the environment the runner passes on.

``--standby`` is the warm worker: it imports torch, onnxruntime and every plugin first (seconds of work), then
runs the job ids it reads on stdin, one after another, until stdin closes, so a job starts in milliseconds
and the model of the previous job is still loaded (``model_memory``).
"""

from __future__ import annotations

import os
import signal
import sys
import warnings

from viz_server.config import load_settings, setting
from viz_server.jobs import threads
from viz_server.jobs.budget import limit_memory
from viz_server.jobs.execute import execute_job
from viz_server.store import FINISHED, Store


def preload() -> None:
    """Import what every job needs before the job arrives."""
    import onnxruntime  # noqa: F401
    import torch  # noqa: F401

    import viz_server.model.pipeline  # noqa: F401  (onnx, onnx2torch)
    import viz_server.runner  # noqa: F401
    from viz_server.installed import techniques
    from viz_server.rendering import pyplot

    techniques()  # imports and registers every installed plugin
    pyplot()  # matplotlib: most results draw a plot (about 0.8 s to import)


def log_to(path) -> None:
    """Send this process's stdout and stderr to ``path`` (appending)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(descriptor, 1)
    os.dup2(descriptor, 2)
    os.close(descriptor)


def die_with_parent() -> None:
    """Linux: be killed when the server that started us dies (a SIGKILLed server must not leave its jobs running,
    or a restarted one could run them twice)."""
    parent = setting("VIZ_SERVER_PARENT_PID")
    if not sys.platform.startswith("linux") or not parent:
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the server died before the line above: there is nobody to work for
        sys.exit(0)


def main() -> int:
    warnings.simplefilter("ignore")
    os.umask(0o077)  # results and logs: readable by the server's user only
    die_with_parent()
    settings = load_settings()
    threads.fit(settings.max_jobs, settings.threads)  # before any model work: this job's share of the cores
    preload()  # the imports are not a job's time: its timeout starts when it starts working
    limit_memory(settings.job_memory_bytes)
    store = Store(settings)
    if sys.argv[1:] != ["--standby"]:
        return 0 if execute_job(store, int(sys.argv[1])) in FINISHED else 1
    while line := sys.stdin.readline().strip():  # an empty read: the runner closed stdin, we are done
        job_id = int(line)
        log_to(settings.data_dir / "logs" / f"job-{job_id}.log")
        execute_job(store, job_id)
    return 0


if __name__ == "__main__":
    sys.exit(main())
