"""Scale-out: Celery workers (`viz-server worker`) with a Redis broker, a shared database and blob folder.

Set VIZ_SERVER_BROKER_URL (e.g. redis://host:6379/0), VIZ_SERVER_DATABASE_URL (postgresql://...) and
VIZ_SERVER_DATA (a shared folder) on the server and every worker. Workers use Celery's prefork pool, so a
job that crashes its process is redelivered (acks_late) and then retried or failed like in the embedded
runner.
"""

from __future__ import annotations

from celery import Celery

from viz_server.config import Settings, load_settings
from viz_server.jobs.execute import execute_job
from viz_server.store import JobRecord, JobStatus, Store
from viz_server.store.database import now

TASK_NAME = "viz_server.run_job"


def make_celery(settings: Settings) -> Celery:
    app = Celery("viz_server", broker=settings.broker_url)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue="viz_server",
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )

    @app.task(name=TASK_NAME)
    def run_job(job_id: int) -> str:
        store = Store(load_settings())
        job = store.db.get(JobRecord, job_id)
        if job is None:
            return "missing"
        if job.status == JobStatus.RUNNING:  # redelivered: the process that ran it died
            if job.attempts > settings.job_retries:
                store.db.update_job(
                    job_id,
                    status=JobStatus.FAILED,
                    finished_at=now(),
                    progress_message="failed",
                    error=f"the job's worker process died after {job.attempts} attempt(s); try fewer or smaller images.",
                )
                return JobStatus.FAILED
            store.db.update_job(job_id, attempts=job.attempts + 1)
        elif not store.db.claim_job(job_id):
            return "skipped"
        return execute_job(store, job_id)

    return app


class CeleryDispatcher:
    """Sends each new job to the Celery queue; the web process runs no model code."""

    def __init__(self, settings: Settings):
        self.app = make_celery(settings)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def submit(self, job_id: int) -> None:
        self.app.send_task(TASK_NAME, args=[job_id])


def run_worker(concurrency: int = 1) -> None:
    settings = load_settings()
    if not settings.broker_url:
        raise SystemExit("viz-server worker needs VIZ_SERVER_BROKER_URL (e.g. redis://127.0.0.1:6379/0).")
    make_celery(settings).worker_main(["worker", "--loglevel=INFO", f"--concurrency={concurrency}", "--pool=prefork", "-Q", "viz_server"])
