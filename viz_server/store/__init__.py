"""Persistence: a SQL database for records and a content-addressed folder for bytes."""

from __future__ import annotations

import io
import os
import statistics
import threading
import time
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import defer

from viz_server.config import Settings
from viz_server.errors import NotFound, UserError
from viz_server.model.images import decode_image
from viz_server.store.blobs import BlobStore
from viz_server.store.database import (
    FINISHED,
    Database,
    ImageRecord,
    JobRecord,
    JobStatus,
    ModelRecord,
    ModelStatus,
    ReportRecord,
    ShardRecord,
    now,
)
from viz_server.techniques import Result

__all__ = ["FINISHED", "ImageRecord", "JobRecord", "JobStatus", "ModelRecord", "ModelStatus", "ReportRecord", "ShardRecord", "Store"]


def _private(settings: Settings) -> None:
    """The data folder, its database and blobs are the server user's alone (folders 0700, files 0600)."""
    for folder in (settings.data_dir, settings.blob_dir, settings.data_dir / "logs"):
        if folder.is_dir():
            folder.chmod(0o700)
    if settings.database_url.startswith("sqlite:///"):
        database = Path(settings.database_url[len("sqlite:///") :])
        for path in (database, database.with_name(database.name + "-wal"), database.with_name(database.name + "-shm")):
            if path.is_file():
                path.chmod(0o600)


def clean_name(name: str, fallback: str) -> str:
    """A display name from a client: printable, at most 200 characters (it is escaped wherever shown)."""
    cleaned = "".join(c for c in str(name or "") if c.isprintable()).strip()
    return cleaned[:200] or fallback


class Store:
    """The database and blob folder of one server, with the operations the web layer and workers share."""

    def __init__(self, settings: Settings):
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.settings = settings
        self.db = Database(settings.database_url)
        self.blobs = BlobStore(settings.blob_dir)
        _private(settings)

    # ---- models ------------------------------------------------------------------------------------
    def add_model(self, name: str, data: bytes, shipped: bool = False, spec_overrides: dict | None = None) -> tuple[ModelRecord, JobRecord]:
        """Store model bytes and queue the job that inspects (guards, converts, verifies) them."""
        digest = self.blobs.put(data)
        record = self.db.add(ModelRecord(name=clean_name(name, digest[:12]), sha256=digest, shipped=shipped, spec_overrides=spec_overrides or {}))
        return record, self.queue_inspection(record.id)

    def queue_inspection(self, model_id: int, spec_overrides: dict | None = None) -> JobRecord:
        """An inspection job; with ``spec_overrides``, a trial of a changed spec that the job saves only when the
        model loads and verifies with it (the model keeps its working spec otherwise)."""
        self.db.update_model(model_id, status=ModelStatus.INSPECTING, error=None)
        params = {"spec_overrides": spec_overrides} if spec_overrides is not None else {}
        return self.db.add(JobRecord(kind="inspect", model_id=model_id, params=params))

    def queue_prediction(self, model_id: int, image_id: int) -> JobRecord:
        """A job that runs the model once on one image and decodes what it says (for target pickers)."""
        return self.db.add(JobRecord(kind="predict", model_id=model_id, image_ids=[image_id]))

    def models(self) -> list[ModelRecord]:
        with self.db.session() as session:
            return list(session.scalars(select(ModelRecord).order_by(ModelRecord.id)))

    def model_by_sha(self, digest: str) -> ModelRecord | None:
        with self.db.session() as session:
            return session.scalars(select(ModelRecord).where(ModelRecord.sha256 == digest).order_by(ModelRecord.id)).first()

    # ---- images ------------------------------------------------------------------------------------
    def add_image(self, name: str, data: bytes, image_set: str = "uploads", label: str | None = None) -> ImageRecord:
        """Check that the bytes are a safe picture (header only, no model code), then store them."""
        return self.add_images([(name, data, image_set, label)])[0]

    def add_images(self, pictures: Iterable[tuple]) -> list[ImageRecord]:
        """Check and store (name, bytes, set, label[, mask bytes]) pictures all or nothing: each is checked and its
        bytes kept as it comes (so a stream of them needs memory for one), and the records are written in one
        transaction only when every one passed; a refusal leaves no record behind."""
        records = []
        for name, data, image_set, label, *mask in pictures:
            # checked by decoding it whole, kept only reduced: a request holds a small picture, not the full one
            width, height = decode_image(data, clean_name(name, "image"), fit=CHECKED_AT).info["full_size"]
            mask_digest = None
            if mask and mask[0] is not None:
                decode_image(mask[0], clean_name(name, "image") + " (its mask)", fit=CHECKED_AT)
                mask_digest = self.blobs.put(mask[0])
            digest = self.blobs.put(data)
            records.append(
                ImageRecord(
                    name=clean_name(name, digest[:12]),
                    sha256=digest,
                    image_set=clean_name(image_set, "uploads")[:100],
                    label=clean_name(label, "")[:200] or None if label else None,
                    width=width,
                    height=height,
                    mask_sha256=mask_digest,
                )
            )
        with self.db.session() as session:
            session.add_all(records)
            session.commit()
        return records

    def thumbnail_of(self, digest: str, size: int = 96) -> bytes:
        """A stored picture's thumbnail, made once and kept beside the blobs (``thumbnails/``): a page of pictures
        never decodes the full-size files again."""
        folder = self.settings.data_dir / "thumbnails"
        cached = folder / f"{self.blobs.path(digest).name}-{size}.png"
        if cached.is_file():
            return cached.read_bytes()
        made = thumbnail(self.blobs.read(digest), size)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        temporary = cached.with_name(f"{cached.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        temporary.write_bytes(made)
        temporary.replace(cached)
        return made

    def forget_images(self, image_ids: list[int]) -> None:
        """Delete image records just stored by a request that was then refused (no job refers to them yet); their
        blobs go with the next garbage collection."""
        with self.db.session() as session:
            session.execute(delete(ImageRecord).where(ImageRecord.id.in_(image_ids)))
            session.commit()

    def images(self, image_set: str | None = None) -> list[ImageRecord]:
        with self.db.session() as session:
            query = select(ImageRecord).order_by(ImageRecord.id)
            if image_set:
                query = query.where(ImageRecord.image_set == image_set)
            return list(session.scalars(query))

    def images_by_id(self, image_ids: list[int]) -> list[ImageRecord]:
        """The stored images among ``image_ids`` (one query; missing ids left out)."""
        with self.db.session() as session:
            return list(session.scalars(select(ImageRecord).where(ImageRecord.id.in_(set(image_ids))))) if image_ids else []

    def image_sets(self) -> list[str]:
        with self.db.session() as session:
            return sorted({row[0] for row in session.execute(select(ImageRecord.image_set))})

    # ---- jobs ----------------------------------------------------------------------------------------
    def create_job(self, technique: str, model_id: int, image_ids: list[int], params: dict, seed: int = 0) -> JobRecord:
        """Store one technique job (checked already; see ``web.actions.prepared_job``)."""
        job = JobRecord(kind="technique", technique=technique, model_id=model_id, image_ids=image_ids, params=params, seed=seed)
        self.save_jobs([job])
        return job

    def save_jobs(self, jobs: list[JobRecord], report: ReportRecord | None = None, queue_order: list[int] | None = None) -> None:
        """Store jobs (and the report they belong to) in one transaction. ``queue_order`` (indices into ``jobs``)
        is the order they leave the queue in, within the range of their own ids; by default, their order."""
        wanted = {job.model_id for job in jobs}
        gone = f"model {min(wanted)} was deleted while the job was being submitted; nothing was stored."
        with self.db.session() as session:
            if report is not None:
                session.add(report)
                session.flush()
                for job in jobs:
                    job.report_id = report.id
            session.add_all(jobs)
            try:
                # written (SQLite: the write lock held; PostgreSQL: the foreign key's share lock on each model row,
                # which a deletion's row lock waits for), then the models checked still there
                session.flush()
                found = set(session.scalars(select(ModelRecord.id).where(ModelRecord.id.in_(wanted)).with_for_update(key_share=True)))
            except IntegrityError:  # PostgreSQL: the model was deleted first (the foreign key refuses the job)
                session.rollback()
                raise UserError(gone) from None
            if wanted - found:
                session.rollback()
                raise UserError(gone)
            if queue_order is not None:
                for position, index in zip(sorted(job.id for job in jobs), queue_order):
                    jobs[index].queue_position = position
            session.commit()

    def typical_seconds(self, techniques: list[str], model_id: int, recent: int = 5) -> dict[str, float]:
        """Technique -> the median seconds of its latest ``recent`` finished runs on this model (on any model when
        it has none); techniques never run are left out."""
        with self.db.session() as session:
            rows = session.execute(
                select(JobRecord.technique, JobRecord.model_id, JobRecord.seconds)
                .where(JobRecord.status == JobStatus.DONE, JobRecord.seconds.is_not(None), JobRecord.technique.in_(techniques))
                .order_by(JobRecord.id.desc())
                .limit(50 * max(1, len(techniques)))
            ).all()
        typical = {}
        for name in techniques:
            runs = [seconds for technique, _, seconds in rows if technique == name]
            here = [seconds for technique, model, seconds in rows if technique == name and model == model_id]
            if runs:
                typical[name] = statistics.median((here or runs)[:recent])
        return typical

    def jobs(
        self,
        limit: int = 200,
        report_id: int | None = None,
        with_results: bool = True,
        kinds: tuple[str, ...] | None = None,
        model_id: int | None = None,
    ) -> list[JobRecord]:
        """The newest ``limit`` jobs (of ``kinds``, on ``model_id``, when given), or every job of a report in order;
        ``with_results=False`` leaves the (large) result column unread, for lists."""
        with self.db.session() as session:
            query = select(JobRecord).order_by(JobRecord.id.desc()).limit(limit)
            if kinds is not None:
                query = query.where(JobRecord.kind.in_(kinds))
            if model_id is not None:
                query = query.where(JobRecord.model_id == model_id)
            if report_id is not None:
                query = select(JobRecord).where(JobRecord.report_id == report_id).order_by(JobRecord.id)
            if not with_results:
                query = query.options(defer(JobRecord.result, raiseload=True))
            return list(session.scalars(query))

    def inspection_ended(self, job: JobRecord, message: str) -> None:
        """The model after its inspection job ended without success (failed, cancelled, killed, timed out): a spec
        trial leaves a model that was working ready, with its working spec; any other inspection leaves it failed,
        with the sentence."""
        record = self.db.get(ModelRecord, job.model_id)
        if record is None:
            return
        if "spec_overrides" in (job.params or {}) and record.description:
            self.db.update_model(record.id, status=ModelStatus.READY, error=None)
        else:
            self.db.update_model(record.id, status=ModelStatus.FAILED, error=message)

    def request_cancel(self, job_id: int) -> None:
        job = self.db.get(JobRecord, job_id)
        if job is None:
            raise NotFound(f"there is no job {job_id}.")
        if job.status == JobStatus.QUEUED and self.db.cancel_queued(job_id):
            if job.kind == "inspect":
                self.inspection_ended(job, "the inspection was cancelled; save the spec again to retry.")
            return
        if self.db.get(JobRecord, job_id).status == JobStatus.RUNNING:  # it started meanwhile: ask it to stop
            self.db.update_job(job_id, cancel_requested=True, progress_message="cancelling")

    def save_result(self, job_id: int, result: Result) -> None:
        """Artifacts and arrays go to the blob folder; the job keeps the summary with their digests."""
        summary = result.to_json()
        for entry, artifact in zip(summary["artifacts"], result.artifacts):
            if artifact.data:
                entry["sha256"] = self.blobs.put(artifact.data)
        arrays_sha = None
        if result.arrays:
            buffer = io.BytesIO()
            np.savez_compressed(buffer, **result.arrays)
            arrays_sha = self.blobs.put(buffer.getvalue())
        self.db.update_running(
            job_id,
            status=JobStatus.DONE,
            result=summary,
            arrays_sha256=arrays_sha,
            finished_at=now(),
            seconds=result.provenance.get("seconds"),
            progress_message="done",
        )

    def array(self, job: JobRecord, name: str) -> np.ndarray:
        if not job.arrays_sha256:
            raise KeyError(name)
        with np.load(self.blobs.path(job.arrays_sha256), allow_pickle=False) as arrays:
            if name not in arrays.files:
                raise KeyError(name)
            return arrays[name]

    # ---- deleting ---------------------------------------------------------------------------------------
    DELETABLE = ("model", "image", "report")

    def deletion(self, kind: str, record_id: int) -> dict:
        """What deleting a model, image or report takes with it: the record, every job made from it (a result
        holds the pictures and figures derived from it) and the reports left empty; ``blocking`` names jobs
        still queued or running, which must be cancelled first."""
        record_type = {"model": ModelRecord, "image": ImageRecord, "report": ReportRecord}[kind]
        record = self.db.require(record_type, record_id, kind)
        if kind == "model" and record.shipped:
            raise UserError(f"{record.name} is a shipped model; it comes back at every start, so it cannot be deleted.")
        with self.db.session() as session:
            every = list(session.scalars(select(JobRecord).options(defer(JobRecord.result, raiseload=True))))
        if kind == "model":
            jobs = [job for job in every if job.model_id == record_id]
        elif kind == "image":
            jobs = [job for job in every if record_id in (job.image_ids or []) or job.second_image_id == record_id]
        else:
            jobs = [job for job in every if job.report_id == record_id]
        doomed = {job.id for job in jobs}
        touched = {job.report_id for job in jobs if job.report_id is not None}
        emptied = [report_id for report_id in touched if all(job.id in doomed for job in every if job.report_id == report_id)]
        if kind == "report":
            emptied = [record_id]
        return {
            "kind": kind,
            "name": getattr(record, "name", None) or getattr(record, "title", ""),
            "jobs": sorted(doomed),
            "reports": sorted(set(emptied)),
            "blocking": sorted(job.id for job in jobs if job.status in (JobStatus.QUEUED, JobStatus.RUNNING)),
        }

    def delete(self, kind: str, record_id: int) -> dict:
        """Delete a model, image or report with what ``deletion`` lists, all in one transaction, then the blobs
        nothing refers to any more. Refused (nothing changes) while one of those jobs is queued or running."""
        plan = self.deletion(kind, record_id)
        if plan["blocking"]:
            raise UserError(
                f"job{'s' if len(plan['blocking']) > 1 else ''} {', '.join(map(str, plan['blocking']))} on this {kind} still run; cancel them or wait, then delete."
            )
        record_type = {"model": ModelRecord, "image": ImageRecord, "report": ReportRecord}[kind]
        refused = f"this {kind} gained or started a job while it was being deleted; nothing was deleted, try again."
        with self.db.session() as session:
            # first the record's row locked (PostgreSQL: a job being saved for it holds the foreign key's share lock,
            # which this waits for, and which a save waits for in turn) and a write made (SQLite: the write lock held),
            # so the checks below see every job saved before, and none is saved after
            session.execute(select(record_type.id).where(record_type.id == record_id).with_for_update())
            session.execute(update(record_type).where(record_type.id == record_id).values(id=record_type.id))
            # nothing of the plan started meanwhile, and no job was added to the record
            active = select(JobRecord.id).where(JobRecord.id.in_(plan["jobs"]), JobRecord.status.in_([JobStatus.QUEUED, JobStatus.RUNNING]))
            owner = {"model": JobRecord.model_id, "report": JobRecord.report_id}.get(kind)
            added = select(JobRecord.id).where(owner == record_id, JobRecord.id.not_in(plan["jobs"])) if owner is not None else None
            if session.execute(active).first() or (added is not None and session.execute(added).first()):
                session.rollback()
                raise UserError(refused)
            try:
                if plan["jobs"]:
                    session.execute(delete(JobRecord).where(JobRecord.id.in_(plan["jobs"])))
                if plan["reports"]:
                    session.execute(delete(ReportRecord).where(ReportRecord.id.in_(plan["reports"])))
                if kind == "model":  # the rows of whole-set work done on it
                    session.execute(delete(ShardRecord).where(ShardRecord.model_id == record_id))
                if kind != "report":
                    session.execute(delete(record_type).where(record_type.id == record_id))
                session.commit()
            except IntegrityError:  # a foreign key still refers to it: something was saved for it meanwhile
                session.rollback()
                raise UserError(refused) from None
        self.collect_garbage()
        return plan

    def collect_garbage(self, grace_seconds: float = 600.0) -> int:
        """Remove the blobs no model, image or job refers to (older than ``grace_seconds``, so a blob written just
        before its record is never taken); return how many went."""
        with self.db.session() as session:
            used = {digest for (digest,) in session.execute(select(ModelRecord.sha256))}
            for digest, mask in session.execute(select(ImageRecord.sha256, ImageRecord.mask_sha256)):
                used.update(d for d in (digest, mask) if d)
            for arrays, result in session.execute(select(JobRecord.arrays_sha256, JobRecord.result)):
                used.update([arrays] if arrays else [])
                used.update(a["sha256"] for a in ((result or {}).get("artifacts") or []) if isinstance(a, dict) and a.get("sha256"))
            used.update(digest for (digest,) in session.execute(select(ShardRecord.rows_sha256)) if digest)
        limit = time.time() - grace_seconds
        removed = 0
        for digest, modified in self.blobs.stored():
            if digest not in used and modified < limit:
                self.blobs.remove(digest)
                removed += 1
        for cached in (self.settings.data_dir / "thumbnails").glob("*.png"):  # thumbnails of pictures gone
            if cached.name.split("-")[0] not in used and cached.stat().st_mtime < limit:
                cached.unlink(missing_ok=True)
        return removed

    # ---- reports ---------------------------------------------------------------------------------------
    def reports(self, limit: int | None = None, offset: int = 0) -> list[ReportRecord]:
        """Reports, newest first (a page of them with ``limit`` and ``offset``)."""
        with self.db.session() as session:
            return list(session.scalars(select(ReportRecord).order_by(ReportRecord.id.desc()).limit(limit).offset(offset)))

    def report_count(self) -> int:
        with self.db.session() as session:
            return session.scalar(select(func.count()).select_from(ReportRecord))


CHECKED_AT = (64, 64)
"""The size an uploaded picture is reduced to once decoded whole to check it (``decode_image``'s ``fit``)."""


def thumbnail(data: bytes, size: int = 96) -> bytes:
    """A PNG thumbnail of stored picture bytes, decoded reduced (``decode_image``'s ``fit``) and under its gate."""
    picture = decode_image(data, "thumbnail", fit=(size, size))
    picture.thumbnail((size, size))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
