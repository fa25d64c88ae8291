"""Leases: how a job runs exactly once across processes, servers and workers.

A running job's process renews its lease (``heartbeat_at``) every ``HEARTBEAT_SECONDS`` while it works. A
runner (the embedded one, or the web process in front of Celery workers) that finds a running job whose lease
has not been renewed for ``job_lease`` seconds knows its process is gone (its server or worker was killed), and
requeues it (within ``job_retries``) or fails it with a sentence; it never starts a job whose lease is alive.
Outcomes are written only while the job is still running (``Database.update_running``), so a late finisher cannot
overwrite what a reaper decided.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager

from viz_server.store import JobStatus, Store
from viz_server.store.database import now

HEARTBEAT_SECONDS = 2.0


@contextmanager
def heartbeat(store: Store, job_id: int) -> Iterator[None]:
    """Renew the job's lease from a background thread for as long as the block runs, four times per lease."""
    with keep_alive(lambda: store.db.beat(job_id), store.settings.job_lease, f"viz-server-lease-{job_id}"):
        yield


@contextmanager
def keep_alive(beat: Callable[[], object], lease_seconds: float, name: str) -> Iterator[None]:
    """Call ``beat`` now and from a background thread four times per lease for as long as the block runs."""
    every = min(HEARTBEAT_SECONDS, lease_seconds / 4)
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every):
            try:
                beat()
            except Exception:  # noqa: BLE001 - a missed beat only shortens the lease; the work goes on
                pass

    thread = threading.Thread(target=loop, name=name, daemon=True)
    beat()
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=every + 1)


def reap(store: Store, lease_seconds: float, retries: int, resubmit: Callable[[int], None], alive: Collection[int] = ()) -> int:
    """Requeue (or fail, past ``retries``) every running job whose lease expired, except those whose process this
    runner knows to be alive (``alive``); return how many were reaped."""
    reaped = 0
    for job in store.db.stale_jobs(lease_seconds):
        if job.id in alive:
            continue
        if job.attempts <= retries:
            if store.db.take_over_stale(
                job.id,
                lease_seconds,
                status=JobStatus.QUEUED,
                heartbeat_at=None,
                progress_message="requeued: its process stopped (its server or worker was stopped or killed)",
            ):
                resubmit(job.id)
                reaped += 1
            continue
        message = (
            f"the job's process stopped without an outcome after {job.attempts} attempt(s) (its server or worker was killed, or it "
            "crashed); try again, or with fewer or smaller images."
        )
        if store.db.take_over_stale(job.id, lease_seconds, status=JobStatus.FAILED, error=message, finished_at=now(), progress_message="failed"):
            if job.kind == "inspect":
                store.inspection_ended(job, message)
            reaped += 1
    return reaped
