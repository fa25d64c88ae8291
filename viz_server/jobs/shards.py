"""Whole-set work split over processes.

A per-picture work (``picture_stream.per_picture``) over a labeled set is cut into shards of whole chunks, so the
model sees exactly the batches one process would give it and the merged rows are the same bit for bit. Each shard
is a stored record (``ShardRecord``): a dispatcher (Celery, under scale-out) sends it to the workers, and the job
that needs it runs, while it waits, every shard nobody has claimed (so it never waits on a busy queue) and takes
over a shard whose process stopped renewing its lease. A shard is keyed by the work, the model, its spec and the
whole set, and its rows are kept: every job of an audit that needs the same work reads them once they exist.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import time
from collections.abc import Callable

import numpy as np

import viz_server
from viz_server.errors import Cancelled, UserError
from viz_server.jobs.leases import keep_alive
from viz_server.model.spec import spec_digest
from viz_server.picture_stream import PictureStream
from viz_server.store import JobStatus, ModelRecord, ShardRecord, Store
from viz_server.store.database import now

MAX_ATTEMPTS = 3
"""Claims of one shard before it is failed (its pictures stopped the processes that ran them)."""
WAIT_SECONDS = 0.1
"""Between looks at the shards other processes run."""


def basis(model) -> str:
    """What a work's rows depend on besides the pictures: viz-server's version, the model and its spec."""
    return hashlib.sha256(json.dumps([viz_server.__version__, model.sha256, spec_digest(model.spec)]).encode()).hexdigest()


def work_key(work: str, stream: PictureStream) -> str:
    return hashlib.sha256(json.dumps([work, basis(stream.model), stream.digest]).encode()).hexdigest()


def _runner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


class Spread:
    """``PictureStream.spread`` for one job: its set's per-picture work cut into stored shards of
    ``settings.shard_pictures`` pictures, sent to ``submit`` (None: no dispatcher; the jobs that need the work share
    its shards among themselves)."""

    def __init__(
        self,
        store: Store,
        model_id: int,
        image_ids: list[int],
        submit: Callable[[int], None] | None = None,
        is_cancelled: Callable[[], bool] | None = None,
    ):
        self.store, self.model_id, self.image_ids = store, model_id, list(image_ids)
        self.submit, self.is_cancelled = submit, is_cancelled

    def _check(self, *_progress: int) -> None:
        if self.is_cancelled is not None and self.is_cancelled():
            raise Cancelled()

    def _checked(self, on_progress: Callable[[int, int], None] | None) -> Callable[[int, int], None]:
        def progress(done: int, total: int) -> None:
            self._check()
            if on_progress is not None:
                on_progress(done, total)

        return progress

    def __call__(self, stream: PictureStream, work: str, on_progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        size, total = self.store.settings.shard_pictures, len(stream)
        if total <= size:
            return stream.compute(work, 0, total, self._checked(on_progress))
        db = self.store.db
        slices = [(start, min(start + size, total), self.image_ids[start : start + size]) for start in range(0, total, size)]
        shards, queued = db.open_shards(work_key(work, stream), work, self.model_id, basis(stream.model), slices)
        if self.submit is not None:
            for shard_id in queued:
                self.submit(shard_id)
        rows: dict[int, np.ndarray] = {}
        while len(rows) < len(shards):
            self._check()
            current = db.shards([shard.id for shard in shards if shard.id not in rows])
            worked = False
            for shard in sorted(current.values(), key=lambda record: record.start):
                if shard.status == JobStatus.DONE:
                    rows[shard.id] = self._read(shard)
                elif shard.status == JobStatus.FAILED:
                    raise UserError(shard.error or "a shard of the set failed.")
                else:
                    attempt = db.claim_shard(shard.id, self.store.settings.job_lease, _runner())
                    if attempt is not None:  # nobody had it, or its process died: run it here

                        def compute(start: int = shard.start, stop: int = shard.stop) -> np.ndarray:
                            return stream.compute(work, start, stop, self._check)

                        rows[shard.id] = run_claimed(self.store, shard, attempt, compute)
                        worked = True
                        break  # look again: the others may have finished meanwhile
            if on_progress is not None:
                on_progress(sum(shard.stop - shard.start for shard in shards if shard.id in rows), total)
            if not worked and len(rows) < len(shards):
                time.sleep(WAIT_SECONDS)
        return np.concatenate([rows[shard.id] for shard in shards])

    def _read(self, shard: ShardRecord) -> np.ndarray:
        return np.load(io.BytesIO(self.store.blobs.read(shard.rows_sha256 or "")), allow_pickle=False)


def run_claimed(store: Store, shard: ShardRecord, attempt: int, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Compute a shard this process claimed (its ``attempt``), renewing its lease, and record its rows, or the
    sentence that stopped it (a cancelled job hands it back to the queue)."""
    db = store.db
    if attempt > MAX_ATTEMPTS:
        message = f"pictures {shard.start + 1}-{shard.stop} of the set stopped the process that ran them {attempt - 1} times; try fewer or smaller images."
        db.update_claimed_shard(shard.id, attempt, status=JobStatus.FAILED, error=message)
        raise UserError(message)
    beat = lambda: db.update_claimed_shard(shard.id, attempt, heartbeat_at=now())  # noqa: E731
    try:
        with keep_alive(beat, store.settings.job_lease, f"viz-server-shard-{shard.id}"):
            rows = np.asarray(compute())
            if len(rows) != shard.stop - shard.start:
                raise RuntimeError(f"shard {shard.id} gave {len(rows)} rows for {shard.stop - shard.start} pictures")
    except Cancelled:
        db.update_claimed_shard(shard.id, attempt, status=JobStatus.QUEUED, heartbeat_at=None)
        raise
    except UserError as error:
        db.update_claimed_shard(shard.id, attempt, status=JobStatus.FAILED, error=str(error))
        raise
    except Exception as error:
        db.update_claimed_shard(
            shard.id,
            attempt,
            status=JobStatus.FAILED,
            error=f"internal error in pictures {shard.start + 1}-{shard.stop} ({type(error).__name__}); please report it.",
        )
        raise
    buffer = io.BytesIO()
    np.save(buffer, rows, allow_pickle=False)
    db.update_claimed_shard(shard.id, attempt, status=JobStatus.DONE, rows_sha256=store.blobs.put(buffer.getvalue()), heartbeat_at=now())
    return rows


def run_dispatched(store: Store, shard_id: int) -> str:
    """A worker's turn at a dispatched shard: run it when nobody holds it (or its holder died); its final status,
    or "skipped" when another process has it or it ended."""
    from viz_server.installed import techniques
    from viz_server.jobs.stored import load_stored_model, stored_pictures

    shard = store.db.shards([shard_id]).get(shard_id)
    if shard is None or shard.status in (JobStatus.DONE, JobStatus.FAILED):
        return "skipped"
    attempt = store.db.claim_shard(shard_id, store.settings.job_lease, _runner())
    if attempt is None:
        return "skipped"

    def compute() -> np.ndarray:
        techniques()  # the installed plugins register their per-picture works when they are imported
        model = load_stored_model(store, store.db.require(ModelRecord, shard.model_id, "model"))
        if basis(model) != shard.basis:
            raise UserError("the model's spec (or viz-server) changed while its pictures were being split; run the job again.")
        images, labels, masks = stored_pictures(store, shard.image_ids)
        return PictureStream(model, images, labels, masks).compute(shard.work, 0, len(images))

    try:
        run_claimed(store, shard, attempt, compute)
    except Exception:  # noqa: BLE001 - recorded on the shard; the job that waits for it says why
        return JobStatus.FAILED
    return JobStatus.DONE
