"""The embedded job runner: no external service; jobs run in job processes, never in the server.

A thread in the server claims queued jobs (up to ``max_jobs`` at once) and gives each to an idle worker
process: a warm worker (``python -m viz_server.jobs.process --standby``, started ahead with everything
imported; one per job slot, so a burst such as an audit starts warm too) when one is alive, else a fresh
``python -m viz_server.jobs.process JOB_ID``. A worker that finishes a job stays warm and waits for the next
one: the next job of the same model goes to it first, so the techniques of an audit or comparison run in
processes that already hold the model (converted and loaded once per process, see ``model_memory``), and
nothing is imported again. A worker retires after ``JOBS_PER_WORKER`` jobs (memory does not creep); idle
workers beyond one per job slot are let go, and a new one is started only when a worker is gone. A crash still takes down only its process. It kills a job whose job time (from
the moment the process starts working on it, imports excluded) outlives ``job_timeout`` or that ignores a cancel
request, and when a process dies without recording an outcome (a segfault inside onnxruntime, the OOM killer)
it retries the job ``job_retries`` times, then marks it failed; a timed-out inspection fails its model.

Job processes die with the server (``PR_SET_PDEATHSIG``), and a job is only ever requeued once its lease has
expired (see ``leases``): after a crash or SIGKILL of the server, a restarted server never runs a job that is
still running elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC

from viz_server.config import Settings
from viz_server.jobs.failures import process_may_be_broken
from viz_server.jobs.leases import reap
from viz_server.store import FINISHED, JobRecord, JobStatus, Store
from viz_server.store.database import now

POLL_SECONDS = 0.1
CANCEL_GRACE_SECONDS = 10.0
REAP_SECONDS = 2.0
STARTUP_SECONDS = 120.0
"""How long a job process may take to start working (imports) before its time counts anyway."""
JOBS_PER_WORKER = 50
"""Jobs one worker process runs before it retires."""
RETIRE_GRACE_SECONDS = 30.0
"""How long a retired worker may take to exit by itself before it is killed."""
RESTART_BACKOFF_SECONDS = (1.0, 60.0)
"""Waiting before starting workers again after one died without running a job (first, longest)."""


@dataclass
class Worker:
    """A job process: running a job (``EmbeddedRunner.running``) or idle, waiting on stdin for the next job id."""

    process: subprocess.Popen
    handed_over: float = 0.0  # monotonic time its current job was handed to it
    model_id: int | None = None  # the model its last job used (still in its memory)
    jobs: int = 0
    retired_at: float | None = None

    def hand(self, job_id: int) -> bool:
        """Give the worker ``job_id``; False if it died meanwhile."""
        try:
            self.process.stdin.write(f"{job_id}\n".encode())
            self.process.stdin.flush()
        except (OSError, ValueError, AttributeError):  # it died, or it was started for one job only
            self.process.kill()
            self.process.wait(timeout=10)
            return False
        self.handed_over, self.jobs = time.monotonic(), self.jobs + 1
        return True

    def retire(self) -> None:
        """Close its stdin: an idle worker then exits by itself."""
        try:
            if self.process.stdin:
                self.process.stdin.close()
        except OSError:
            self.process.kill()


class EmbeddedRunner:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.running: dict[int, Worker] = {}
        self.idle: list[Worker] = []
        self.retired: list[Worker] = []  # closed, waited for until they exit (killed after RETIRE_GRACE_SECONDS)
        self._backoff = 0.0  # seconds to wait before starting workers again after one died unused
        self._start_after = 0.0
        self.cancel_seen: dict[int, float] = {}
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._reaped_at = 0.0

    def _reap(self) -> None:
        """Requeue or fail running jobs whose process stopped renewing its lease (a server killed before us)."""
        self._reaped_at = time.monotonic()
        if reap(self.store, self.settings.job_lease, self.settings.job_retries, self.submit, alive=set(self.running)):
            self._wake.set()

    # ---- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        if self._stop.is_set():  # stopped before it started (a server shut down while it was still loading)
            return
        self._reap()
        self._top_up()
        self._thread = threading.Thread(target=self._loop, name="viz-server-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the job processes. A job interrupted by this (a graceful stop: SIGTERM, Ctrl-C) goes back to the
        queue with its attempt given back, so restarts never use up the retry that a crash would need."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        interrupted = list(self.running)
        for worker in [*self.running.values(), *self.idle, *self.retired]:
            worker.process.kill()
            worker.process.wait(timeout=10)
        for job_id in interrupted:
            job = self.store.db.get(JobRecord, job_id)
            if job is not None:
                self.store.db.update_running(
                    job_id, status=JobStatus.QUEUED, heartbeat_at=None, attempts=max(job.attempts - 1, 0), progress_message="requeued: the server stopped"
                )

    def submit(self, job_id: int) -> None:
        """A job was queued: look now instead of at the next poll."""
        self._wake.set()

    # ---- the loop ------------------------------------------------------------------------------------
    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # noqa: BLE001 - the runner must outlive a database hiccup
                print(f"viz-server job runner: {type(exc).__name__}: {exc}", file=sys.stderr)
            self._wake.wait(POLL_SECONDS)
            self._wake.clear()

    def tick(self) -> None:
        for job_id in list(self.running):
            self._watch(job_id)
        if time.monotonic() - self._reaped_at > REAP_SECONDS:
            self._reap()
        free = self.settings.max_jobs - len(self.running)
        if free > 0:
            for job_id in self.store.db.queued_job_ids(free):
                if self.store.db.claim_job(job_id):
                    self._spawn(job_id)
        self._bury_retired()
        self._top_up()  # replaces a worker that retired, crashed or was killed

    def _spawn(self, job_id: int) -> None:
        job = self.store.db.get(JobRecord, job_id)
        worker = self._take_idle(job.model_id if job else None, job_id)
        if worker is None:
            with open(self._log_dir() / f"job-{job_id}.log", "ab") as log:
                worker = Worker(self._start([str(job_id)], stdin=subprocess.DEVNULL, stdout=log), time.monotonic(), jobs=1)
        worker.model_id = job.model_id if job else None
        self.running[job_id] = worker

    def _take_idle(self, model_id: int | None, job_id: int) -> Worker | None:
        """Hand ``job_id`` to a live idle worker, one that holds ``model_id`` first, else the oldest (the most likely
        to have finished its imports); None if there is none."""
        self._prune_idle()
        while self.idle:
            worker = next((worker for worker in self.idle if worker.model_id == model_id), self.idle[0])
            self.idle.remove(worker)
            if worker.hand(job_id):
                return worker
        return None

    def _rest(self, worker: Worker, job: JobRecord | None) -> None:
        """A worker finished its job and is alive: keep it idle and warm, unless its job failed in a way that may
        have broken the process (an internal error, memory exhausted; a user error such as a refused picture does
        not), it has done its share, or the idle workers would outnumber the job slots."""
        self._backoff = 0.0  # workers do start and work
        broken = job is None or (job.status == JobStatus.FAILED and process_may_be_broken(job.error))
        spent = worker.process.stdin is None or worker.jobs >= JOBS_PER_WORKER or broken
        if self._stop.is_set() or not self.settings.standby or spent:
            self._retire(worker)
            return
        self.idle.append(worker)
        while len(self.idle) + len(self.running) > self.settings.max_jobs:
            self._retire(min(self.idle, key=lambda idle: idle.model_id is not None))  # a fresh standby goes first

    def _retire(self, worker: Worker) -> None:
        if worker in self.idle:
            self.idle.remove(worker)
        worker.retire()
        worker.retired_at = time.monotonic()
        self.retired.append(worker)

    def _bury_retired(self) -> None:
        """Forget retired workers that exited; kill one that outstays its grace (it hangs on exit)."""
        for worker in self.retired:
            if worker.process.poll() is None and time.monotonic() - (worker.retired_at or 0.0) > RETIRE_GRACE_SECONDS:
                worker.process.kill()
                worker.process.wait(timeout=10)
        self.retired = [worker for worker in self.retired if worker.process.poll() is None]

    def _prune_idle(self) -> None:
        """Drop idle workers that exited; when one exited before its first job (e.g. a plugin that fails at import),
        wait before starting workers again, longer each time, instead of restarting them at every poll."""
        dead = [worker for worker in self.idle if worker.process.poll() is not None]
        self.idle = [worker for worker in self.idle if worker not in dead]
        if any(worker.jobs == 0 for worker in dead):
            self._backoff = min(RESTART_BACKOFF_SECONDS[1], max(RESTART_BACKOFF_SECONDS[0], 2 * self._backoff))
            self._start_after = time.monotonic() + self._backoff
            print(f"viz-server job runner: a worker exited before its first job; starting again in {self._backoff:g} s", file=sys.stderr)

    def _top_up(self) -> None:
        """Keep one live worker per job slot, idle or running (none when ``standby`` is off): a worker that finishes
        its job is the next job's warm process, so no new one is started (and imports) while jobs run."""
        if not self.settings.standby or self._stop.is_set():
            return
        self._prune_idle()
        if time.monotonic() < self._start_after:
            return
        while len(self.idle) + len(self.running) < self.settings.max_jobs:
            with open(self._log_dir() / "standby.log", "ab") as log:
                self.idle.append(Worker(self._start(["--standby"], stdin=subprocess.PIPE, stdout=log)))

    def _start(self, arguments: list[str], stdin, stdout) -> subprocess.Popen:
        env = {
            **os.environ,
            "VIZ_SERVER_DATA": str(self.settings.data_dir),
            "VIZ_SERVER_DATABASE_URL": self.settings.database_url,
            "PYTHONUNBUFFERED": "1",
            "VIZ_SERVER_PARENT_PID": str(os.getpid()),
        }
        return subprocess.Popen(
            [sys.executable, "-m", "viz_server.jobs.process", *arguments], env=env, stdin=stdin, stdout=stdout, stderr=subprocess.STDOUT, start_new_session=True
        )

    def _log_dir(self):
        log_dir = self.settings.data_dir / "logs"
        log_dir.mkdir(exist_ok=True)
        return log_dir

    def _watch(self, job_id: int) -> None:
        worker = self.running[job_id]
        process, handed_over = worker.process, worker.handed_over
        code = process.poll()
        if code is None:
            job = self.store.db.get(JobRecord, job_id)
            if job is None or job.status in FINISHED:  # the worker recorded the outcome and waits for the next job
                del self.running[job_id]
                self.cancel_seen.pop(job_id, None)
                self._rest(worker, job)
                return
            working = job.started_at if job is not None else None  # set by the process once its imports are done
            elapsed = (now() - _aware(working)).total_seconds() if working else 0.0
            if elapsed > self.settings.job_timeout or time.monotonic() - handed_over > self.settings.job_timeout + STARTUP_SECONDS:
                self._kill(
                    job_id, JobStatus.FAILED, f"the job ran longer than {self.settings.job_timeout:g} s and was stopped; use fewer images or fewer steps."
                )
            elif self._cancel_overdue(job):
                self._kill(job_id, JobStatus.CANCELLED, None)
            return
        del self.running[job_id]
        self.cancel_seen.pop(job_id, None)
        job = self.store.db.get(JobRecord, job_id)
        if job is None or job.status != JobStatus.RUNNING:
            return  # the process recorded its outcome
        if job.attempts <= self.settings.job_retries:
            if self.store.db.update_running(
                job_id, status=JobStatus.QUEUED, heartbeat_at=None, progress_message=f"retrying: its process died (exit code {code})"
            ):
                self._wake.set()
        else:
            message = (
                f"the job's process died (exit code {code}) - a crash inside onnxruntime or torch, or out of "
                f"memory - after {job.attempts} attempt(s); try fewer or smaller images."
            )
            if (
                self.store.db.update_running(job_id, status=JobStatus.FAILED, error=message, finished_at=now(), progress_message="failed")
                and job.kind == "inspect"
            ):
                self.store.inspection_ended(job, message)

    def _cancel_overdue(self, job: JobRecord | None) -> bool:
        if job is None or not job.cancel_requested:
            return False
        job_id = job.id
        first_seen = self.cancel_seen.setdefault(job_id, time.monotonic())
        return time.monotonic() - first_seen > CANCEL_GRACE_SECONDS

    def _kill(self, job_id: int, status: str, message: str | None) -> None:
        process = self.running.pop(job_id).process
        process.kill()
        process.wait(timeout=10)
        self.cancel_seen.pop(job_id, None)
        job = self.store.db.get(JobRecord, job_id)
        if self.store.db.update_running(job_id, status=status, error=message, finished_at=now(), progress_message=status) and job and job.kind == "inspect":
            self.store.inspection_ended(job, message or "the inspection was cancelled; save the spec again to retry.")


def _aware(moment):
    """SQLite hands datetimes back without their UTC zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
