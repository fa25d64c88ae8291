"""Threads that fit the machine: each job process takes its share of the cores, set once, for torch and
onnxruntime alike (intra-op; inter-op 1), so that two jobs on two cores do not run four busy threads each.

The share is ``cores // concurrent jobs`` (at least 1), unless the settings name a count (``VIZ_SERVER_THREADS``).
A job process calls ``fit`` before any model work; the count reaches the runtimes through
``viz_server.model.runtime.use_threads``.
"""

from __future__ import annotations

import os

from viz_server.model.runtime import use_threads


def share(concurrent_jobs: int) -> int:
    """Threads for one job when ``concurrent_jobs`` run at once on this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, concurrent_jobs))


def fit(concurrent_jobs: int, configured: int | None = None) -> int:
    """Give this process's torch and onnxruntime ``configured`` threads, or its share of the cores; return the count."""
    count = configured or share(concurrent_jobs)
    use_threads(count)
    return count
