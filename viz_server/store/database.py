"""Persistence: SQLAlchemy over SQLite (WAL) by default, PostgreSQL by URL.

Tables: models (uploaded or shipped ONNX files and their inspection), images (uploaded pictures, grouped
in named sets), jobs (one technique run or one model inspection, with progress and result), reports (a
group of jobs: an audit of one model or a comparison of several), shards (a slice of a per-picture work over a
whole set, run by whichever process claims it and kept for every job that needs the same work).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    func,
    inspect,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

from viz_server.errors import NotFound

MAX_ID = 2**63 - 1
"""The largest id a record can have (a signed 64-bit column)."""
RecordId = BigInteger().with_variant(Integer, "sqlite")
"""Record numbers: 64-bit on every database (SQLite's INTEGER PRIMARY KEY is 64-bit already, and only that
spelling makes it the table's rowid)."""


class JobStatus(StrEnum):
    """Where a job is: queued -> running -> done | failed | cancelled (stored as these strings)."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = frozenset({JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED})


class ModelStatus(StrEnum):
    """Where a stored model is: inspecting (its inspection job queued or running) -> ready | failed."""

    INSPECTING = "inspecting"
    READY = "ready"
    FAILED = "failed"


def now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ModelRecord(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(RecordId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    shipped: Mapped[bool] = mapped_column(Boolean, default=False)
    spec_overrides: Mapped[dict] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default=ModelStatus.INSPECTING)
    description: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ImageRecord(Base):
    __tablename__ = "images"
    id: Mapped[int] = mapped_column(RecordId, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    image_set: Mapped[str] = mapped_column(String(100), default="uploads", index=True)
    label: Mapped[str | None] = mapped_column(String(200), nullable=True)
    width: Mapped[int] = mapped_column(Integer, default=0)
    height: Mapped[int] = mapped_column(Integer, default=0)
    mask_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the object mask, when the set gave one
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class ReportRecord(Base):
    __tablename__ = "reports"
    id: Mapped[int] = mapped_column(RecordId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20))  # audit | compare
    title: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class JobRecord(Base):
    __tablename__ = "jobs"
    id: Mapped[int] = mapped_column(RecordId, primary_key=True)
    kind: Mapped[str] = mapped_column(String(20), default="technique")  # one of JOB_KINDS
    technique: Mapped[str | None] = mapped_column(String(100), nullable=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    report_id: Mapped[int | None] = mapped_column(ForeignKey("reports.id"), nullable=True, index=True)
    params: Mapped[dict] = mapped_column(JSON, default=dict)
    image_ids: Mapped[list] = mapped_column(JSON, default=list)
    second_image_id: Mapped[int | None] = mapped_column(RecordId, nullable=True)
    seed: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED, index=True)
    progress_done: Mapped[int] = mapped_column(Integer, default=0)
    progress_total: Mapped[int] = mapped_column(Integer, default=0)
    progress_message: Mapped[str] = mapped_column(String(300), default="")
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict | None] = mapped_column(JSON, nullable=True)
    arrays_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    seconds: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)  # the running process's lease
    # place in the queue (None: its id); a report's jobs keep their ids' range, reordered longest-expected first
    queue_position: Mapped[int | None] = mapped_column(RecordId, nullable=True)


class ShardRecord(Base):
    """Pictures ``start``..``stop`` of a per-picture work over a set (``picture_stream.per_picture``): queued ->
    running -> done (its rows in a blob) | failed. ``key`` names the work, the model, its spec and the whole set's
    pictures: a job that needs the same work finds the same shards."""

    __tablename__ = "shards"
    __table_args__ = (UniqueConstraint("key", "start"),)
    id: Mapped[int] = mapped_column(RecordId, primary_key=True)
    key: Mapped[str] = mapped_column(String(64), index=True)
    work: Mapped[str] = mapped_column(String(100))
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"), index=True)
    basis: Mapped[str] = mapped_column(String(64))  # viz-server's version, the model and its spec (``jobs.shards.basis``)
    image_ids: Mapped[list] = mapped_column(JSON, default=list)  # the shard's pictures, in order
    start: Mapped[int] = mapped_column(Integer)
    stop: Mapped[int] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(20), default=JobStatus.QUEUED)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    runner: Mapped[str | None] = mapped_column(String(100), nullable=True)  # host:pid of the process that claimed it last
    heartbeat_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    rows_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=now)


class Database:
    """Engine + session factory + the few state transitions every job runner shares."""

    def __init__(self, url: str):
        self.url = url
        is_sqlite = url.startswith("sqlite")
        self.engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False} if is_sqlite else {}, pool_pre_ping=True)
        if is_sqlite:
            event.listen(self.engine, "connect", _sqlite_pragmas)
        Base.metadata.create_all(self.engine)
        self._add_missing_columns()
        self._widen_record_numbers()
        self.session = sessionmaker(self.engine, expire_on_commit=False)

    def _add_missing_columns(self) -> None:
        """The one kind of migration this schema needs: a column added in a later version (always nullable)."""
        existing = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            present = {column["name"] for column in existing.get_columns(table.name)}
            for column in table.columns:
                if column.name not in present:
                    kind = column.type.compile(dialect=self.engine.dialect)
                    try:
                        with self.engine.begin() as connection:
                            connection.execute(text(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}'))
                    except (OperationalError, ProgrammingError):  # another process (a worker, a second server) added it first
                        if column.name not in {found["name"] for found in inspect(self.engine).get_columns(table.name)}:
                            raise

    def _widen_record_numbers(self) -> None:
        """Id columns made 32-bit by an earlier version (PostgreSQL's INTEGER and its serial sequences) widened to
        64 bits, as ``MAX_ID`` and the API promise; SQLite's are 64-bit already."""
        if self.engine.dialect.name != "postgresql":
            return
        existing = inspect(self.engine)
        for table in Base.metadata.sorted_tables:
            found = {column["name"]: column["type"] for column in existing.get_columns(table.name)}
            for column in table.columns:
                if isinstance(column.type, BigInteger) and column.name in found and not isinstance(found[column.name], BigInteger):
                    with self.engine.begin() as connection:
                        connection.execute(text(f'ALTER TABLE {table.name} ALTER COLUMN "{column.name}" TYPE BIGINT'))
                        if column.primary_key:
                            sequence = connection.execute(text(f"SELECT pg_get_serial_sequence('{table.name}', '{column.name}')")).scalar()
                            if sequence:
                                connection.execute(text(f"ALTER SEQUENCE {sequence} AS BIGINT"))

    def get(self, record_type, record_id: int):
        """The record with this id, or None (also for ids no database column can hold: SQLite raises on them)."""
        if not isinstance(record_id, int) or isinstance(record_id, bool) or not 0 < record_id <= MAX_ID:
            return None
        with self.session() as session:
            return session.get(record_type, record_id)

    def require(self, record_type, record_id: int, noun: str):
        """The record, or NotFound with the sentence the web layer shows as a 404."""
        record = self.get(record_type, record_id)
        if record is None:
            raise NotFound(f"there is no {noun} {record_id}.")
        return record

    def add(self, record):
        with self.session() as session:
            session.add(record)
            session.commit()
            return record

    def update_job(self, job_id: int, **values: Any) -> None:
        with self.session() as session:
            session.execute(update(JobRecord).where(JobRecord.id == job_id).values(**values))
            session.commit()

    def update_model(self, model_id: int, **values: Any) -> None:
        with self.session() as session:
            session.execute(update(ModelRecord).where(ModelRecord.id == model_id).values(**values))
            session.commit()

    def claim_job(self, job_id: int) -> bool:
        """queued -> running, atomically; False if another runner got it first or it was cancelled."""
        with self.session() as session:
            claimed = session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED)
                .values(status=JobStatus.RUNNING, started_at=None, heartbeat_at=now(), attempts=JobRecord.attempts + 1, progress_message="starting")
            ).rowcount
            session.commit()
            return claimed == 1

    def queued_job_ids(self, limit: int) -> list[int]:
        with self.session() as session:
            place = func.coalesce(JobRecord.queue_position, JobRecord.id)
            rows = session.execute(select(JobRecord.id).where(JobRecord.status == JobStatus.QUEUED).order_by(place, JobRecord.id).limit(limit))
            return [row[0] for row in rows]

    def update_running(self, job_id: int, **values: Any) -> bool:
        """Change a job only while it is running (record its outcome, requeue it); False, and nothing written, when it
        is no longer running (a reaper or a cancel got there first): a job ends once."""
        with self.session() as session:
            changed = session.execute(update(JobRecord).where(JobRecord.id == job_id, JobRecord.status == JobStatus.RUNNING).values(**values)).rowcount
            session.commit()
            return changed == 1

    def cancel_queued(self, job_id: int) -> bool:
        """queued -> cancelled, atomically (False when a runner claimed it first)."""
        with self.session() as session:
            changed = session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == JobStatus.QUEUED)
                .values(status=JobStatus.CANCELLED, cancel_requested=True, finished_at=now(), progress_message="cancelled before it started")
            ).rowcount
            session.commit()
            return changed == 1

    def beat(self, job_id: int) -> None:
        """The running job's process is alive: renew its lease."""
        self.update_job(job_id, heartbeat_at=now())

    def stale_jobs(self, lease_seconds: float) -> list[JobRecord]:
        """Running jobs whose process has not renewed its lease for ``lease_seconds``: it died (with its server or
        worker), so nobody runs them."""
        limit = now() - timedelta(seconds=lease_seconds)
        with self.session() as session:
            return list(
                session.scalars(
                    select(JobRecord).where(JobRecord.status == JobStatus.RUNNING, or_(JobRecord.heartbeat_at.is_(None), JobRecord.heartbeat_at < limit))
                )
            )

    def take_over_stale(self, job_id: int, lease_seconds: float, **values: Any) -> bool:
        """Change a stale running job atomically (requeue it, fail it, or run it here); False when its lease was renewed
        meanwhile or another runner took it first."""
        limit = now() - timedelta(seconds=lease_seconds)
        with self.session() as session:
            changed = session.execute(
                update(JobRecord)
                .where(JobRecord.id == job_id, JobRecord.status == JobStatus.RUNNING, or_(JobRecord.heartbeat_at.is_(None), JobRecord.heartbeat_at < limit))
                .values(**values)
            ).rowcount
            session.commit()
            return changed == 1

    # ---- shards -------------------------------------------------------------------------------------------
    def open_shards(self, key: str, work: str, model_id: int, basis: str, slices: list[tuple[int, int, list[int]]]) -> tuple[list[ShardRecord], list[int]]:
        """The shards of ``key`` for these (start, stop, image ids) slices, in order, added where missing and queued
        again where one failed; also the ids of the shards queued by this call (for a dispatcher to send)."""
        queued = []
        for start, stop, image_ids in slices:
            with self.session() as session:
                try:
                    record = ShardRecord(key=key, work=work, model_id=model_id, basis=basis, image_ids=image_ids, start=start, stop=stop)
                    session.add(record)
                    session.commit()
                    queued.append(record.id)
                    continue
                except IntegrityError:  # another job opened it first: share it
                    session.rollback()
            with self.session() as session:
                retried = session.execute(
                    update(ShardRecord)
                    .where(ShardRecord.key == key, ShardRecord.start == start, ShardRecord.status == JobStatus.FAILED)
                    .values(status=JobStatus.QUEUED, error=None, attempts=0)
                    .returning(ShardRecord.id)
                ).all()
                session.commit()
                queued += [row[0] for row in retried]
        with self.session() as session:
            shards = list(session.scalars(select(ShardRecord).where(ShardRecord.key == key).order_by(ShardRecord.start)))
        return [shard for shard in shards if (shard.start, shard.stop) in {(start, stop) for start, stop, _ in slices}], queued

    def shards(self, ids: list[int]) -> dict[int, ShardRecord]:
        with self.session() as session:
            return {shard.id: shard for shard in session.scalars(select(ShardRecord).where(ShardRecord.id.in_(ids)))}

    def claim_shard(self, shard_id: int, lease_seconds: float, runner: str) -> int | None:
        """Take a queued shard, or one whose process stopped renewing its lease; the attempt number that is now this
        process's claim, or None when another process holds it (or it ended)."""
        limit = now() - timedelta(seconds=lease_seconds)
        with self.session() as session:
            claimed = session.execute(
                update(ShardRecord)
                .where(
                    ShardRecord.id == shard_id,
                    or_(
                        ShardRecord.status == JobStatus.QUEUED,
                        (ShardRecord.status == JobStatus.RUNNING) & or_(ShardRecord.heartbeat_at.is_(None), ShardRecord.heartbeat_at < limit),
                    ),
                )
                .values(status=JobStatus.RUNNING, attempts=ShardRecord.attempts + 1, heartbeat_at=now(), runner=runner[:100])
                .returning(ShardRecord.attempts)
            ).first()
            session.commit()
            return claimed[0] if claimed else None

    def update_claimed_shard(self, shard_id: int, attempt: int, **values: Any) -> bool:
        """Change a shard only while this claim (``attempt``) holds it: renew its lease, record its rows or error."""
        with self.session() as session:
            changed = session.execute(
                update(ShardRecord).where(ShardRecord.id == shard_id, ShardRecord.status == JobStatus.RUNNING, ShardRecord.attempts == attempt).values(**values)
            ).rowcount
            session.commit()
            return changed == 1


def _sqlite_pragmas(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
