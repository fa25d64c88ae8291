"""Threads that fit the machine: each job process takes its share of the cores, set once, for torch and
onnxruntime alike (intra-op; inter-op 1), so that two jobs on two cores do not run four busy threads each.

The share is ``cores // concurrent jobs`` (at least 1). A job process sets it before any model work;
``VIZ_SERVER_THREADS`` carries it to the onnxruntime sessions the process opens (and overrides the share when
set by hand).
"""

from __future__ import annotations

import os

ENVIRONMENT = "VIZ_SERVER_THREADS"


def share(concurrent_jobs: int) -> int:
    """Threads for one job when ``concurrent_jobs`` run at once on this machine's cores."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // max(1, concurrent_jobs))


def fit(concurrent_jobs: int) -> int:
    """Set this process's torch threads to its share (``VIZ_SERVER_THREADS`` wins when set); return the count."""
    import torch

    count = session_threads() or share(concurrent_jobs)  # a malformed VIZ_SERVER_THREADS is ignored
    os.environ[ENVIRONMENT] = str(count)
    torch.set_num_threads(count)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # only possible before torch's first parallel work; the intra-op setting is what matters
        pass
    return count


def session_threads() -> int | None:
    """The intra-op thread count onnxruntime sessions should use, when a job process has set one."""
    value = os.environ.get(ENVIRONMENT)
    return int(value) if value and value.isdigit() and int(value) > 0 else None
