"""Scale-out: Celery workers (`viz-server worker`) with a Redis broker, a shared database and blob folder.

Set VIZ_SERVER_BROKER_URL (e.g. redis://host:6379/0), VIZ_SERVER_DATABASE_URL (postgresql://...) and
VIZ_SERVER_DATA (a shared folder) on the server and every worker. Workers use Celery's prefork pool with late
acknowledgement, so a job whose process crashes is redelivered. Exactly once: a job runs only when it is claimed
(queued -> running) or when its lease has expired (its worker died); a redelivery of a job whose lease is alive
is dropped. The web process reaps jobs whose worker was killed outright (no redelivery comes for those) and
queues them again, within ``job_retries``. A job's work over a whole image set is split into shards
(``jobs.shards``) that the workers run in parallel, the job itself taking those nobody has claimed.
"""

from __future__ import annotations

import sys
import threading

from celery import Celery

from viz_server.config import Settings, load_settings
from viz_server.jobs import threads
from viz_server.jobs.budget import limit_memory
from viz_server.jobs.embedded import JOBS_PER_WORKER
from viz_server.jobs.execute import execute_job
from viz_server.jobs.leases import reap
from viz_server.jobs.shards import run_dispatched
from viz_server.store import JobRecord, JobStatus, Store
from viz_server.store.database import now

TASK_NAME = "viz_server.run_job"
SHARD_TASK = "viz_server.run_shard"
REAP_SECONDS = 2.0


def make_celery(settings: Settings, job_threads: int | None = None) -> Celery:
    """The Celery app; ``job_threads``: the threads each pool process gives a job (a worker's share of the cores)."""
    app = Celery("viz_server", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="viz_server",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_max_tasks_per_child=JOBS_PER_WORKER,  # a pool process keeps its last model (model_memory); it retires like ours
    )

    @app.task(name=TASK_NAME)
    def run_job(job_id: int) -> str:
        current = load_settings()
        threads.fit(1, job_threads or current.threads)  # the worker's share of the cores for its pool
        limit_memory(current.job_memory_bytes)  # as a job process of the embedded runner
        store = Store(current)
        job = store.db.get(JobRecord, job_id)
        if job is None:
            return "missing"
        if job.status == JobStatus.RUNNING:  # redelivered: is the process that had it still alive?
            if job.attempts > current.job_retries:
                failed = store.db.take_over_stale(
                    job_id,
                    current.job_lease,
                    status=JobStatus.FAILED,
                    finished_at=now(),
                    progress_message="failed",
                    error=f"the job's worker process died after {job.attempts} attempt(s); try fewer or smaller images.",
                )
                return JobStatus.FAILED if failed else "skipped"
            if not store.db.take_over_stale(job_id, current.job_lease, attempts=job.attempts + 1, heartbeat_at=now()):
                return "skipped"  # its lease is alive: another worker is running it
        elif not store.db.claim_job(job_id):
            return "skipped"
        return execute_job(store, job_id, lambda shard_id: app.send_task(SHARD_TASK, args=[shard_id]))

    @app.task(name=SHARD_TASK)
    def run_shard(shard_id: int) -> str:
        """A slice of a job's work over a whole image set (``jobs.shards``); the job that needs it runs it itself
        if no worker has claimed it by then."""
        current = load_settings()
        threads.fit(1, job_threads or current.threads)
        limit_memory(current.job_memory_bytes)
        return run_dispatched(Store(current), shard_id)

    return app


class CeleryDispatcher:
    """Sends each new job to the Celery queue, and reaps jobs whose worker died (their lease expired); the web
    process runs no model code."""

    def __init__(self, settings: Settings, store: Store | None = None):
        self.app = make_celery(settings)
        self.settings, self.store = settings, store
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self.store is not None:
            self._thread = threading.Thread(target=self._reap_loop, name="viz-server-reaper", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _reap_loop(self) -> None:
        while not self._stop.wait(REAP_SECONDS):
            try:
                reap(self.store, self.settings.job_lease, self.settings.job_retries, self.submit)
            except Exception as exc:  # noqa: BLE001 - the reaper must outlive a database or broker hiccup
                print(f"viz-server job reaper: {type(exc).__name__}: {exc}", file=sys.stderr)

    def submit(self, job_id: int) -> None:
        self.app.send_task(TASK_NAME, args=[job_id])


def run_worker(concurrency: int = 1) -> None:
    settings = load_settings()
    if not settings.broker_url:
        raise SystemExit("viz-server worker needs VIZ_SERVER_BROKER_URL (e.g. redis://127.0.0.1:6379/0).")
    job_threads = settings.threads or threads.share(concurrency)  # each pool process: its share of the cores
    make_celery(settings, job_threads).worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork", "-Q", "viz_server"])
