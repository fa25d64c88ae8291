"""The embedded job runner: no external service; each job runs in its own process.

A thread in the server claims queued jobs (up to ``max_jobs`` at once) and gives each to a process of its own:
a warm standby process (``python -m viz_server.jobs.process --standby``, started ahead with everything
imported; one per job slot, so a burst such as an audit starts warm too) when one is alive, else a fresh
``python -m viz_server.jobs.process JOB_ID``; then it tops the standbys up again. It kills a job whose job time (from
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
from datetime import UTC

from viz_server.config import Settings
from viz_server.jobs.leases import reap
from viz_server.store import JobRecord, JobStatus, ModelStatus, Store
from viz_server.store.database import now

POLL_SECONDS = 0.1
CANCEL_GRACE_SECONDS = 10.0
REAP_SECONDS = 2.0
STARTUP_SECONDS = 120.0
"""How long a job process may take to start working (imports) before its time counts anyway."""


class EmbeddedRunner:
    def __init__(self, store: Store, settings: Settings):
        self.store, self.settings = store, settings
        self.running: dict[int, tuple[subprocess.Popen, float]] = {}
        self.standbys: list[subprocess.Popen] = []
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
        self._reap()
        self._start_standbys()
        self._thread = threading.Thread(target=self._loop, name="viz-server-jobs", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for process, _ in self.running.values():
            process.kill()
        for standby in self.standbys:
            standby.kill()
            standby.wait(timeout=10)

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

    def _spawn(self, job_id: int) -> None:
        process = self._take_standby(job_id)
        if process is None:
            with open(self._log_dir() / f"job-{job_id}.log", "ab") as log:
                process = self._start([str(job_id)], stdin=subprocess.DEVNULL, stdout=log)
        self.running[job_id] = (process, time.monotonic())
        self._start_standbys()

    def _take_standby(self, job_id: int) -> subprocess.Popen | None:
        """Hand ``job_id`` to a standby process that is alive; None if there is none to take."""
        self.standbys = [standby for standby in self.standbys if standby.poll() is None]
        if not self.standbys:
            return None
        process = self.standbys.pop(0)  # the oldest: the most likely to have finished its imports
        try:
            process.stdin.write(f"{job_id}\n".encode())
            process.stdin.close()
        except OSError:  # it died between the poll and the write
            process.kill()
            return None
        return process

    def _start_standbys(self) -> None:
        """Keep one live standby per job slot (none when ``standby`` is off)."""
        if not self.settings.standby or self._stop.is_set():
            return
        self.standbys = [standby for standby in self.standbys if standby.poll() is None]
        while len(self.standbys) < self.settings.max_jobs:
            with open(self._log_dir() / "standby.log", "ab") as log:
                self.standbys.append(self._start(["--standby"], stdin=subprocess.PIPE, stdout=log))

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
        process, handed_over = self.running[job_id]
        code = process.poll()
        if code is None:
            job = self.store.db.get(JobRecord, job_id)
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
                self.store.db.update_model(job.model_id, status=ModelStatus.FAILED, error=message)

    def _cancel_overdue(self, job: JobRecord | None) -> bool:
        if job is None or not job.cancel_requested:
            return False
        job_id = job.id
        first_seen = self.cancel_seen.setdefault(job_id, time.monotonic())
        return time.monotonic() - first_seen > CANCEL_GRACE_SECONDS

    def _kill(self, job_id: int, status: str, message: str | None) -> None:
        process, _ = self.running.pop(job_id)
        process.kill()
        process.wait(timeout=10)
        self.cancel_seen.pop(job_id, None)
        job = self.store.db.get(JobRecord, job_id)
        if self.store.db.update_running(job_id, status=status, error=message, finished_at=now(), progress_message=status) and job and job.kind == "inspect":
            self.store.db.update_model(job.model_id, status=ModelStatus.FAILED, error=message or "the inspection was cancelled; save the spec again to retry.")


def _aware(moment):
    """SQLite hands datetimes back without their UTC zone."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
