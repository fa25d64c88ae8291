"""Every setting viz-server reads from the environment, in one table, and the one place they are read.

``SETTINGS`` names each environment variable with its default and what it does (the README's "Settings" table
is checked against it by a docs test). ``load_settings`` reads the server's settings; ``setting`` reads one,
for the few that are not the server's (the model cache, ``serve``'s address, debugging).
No configuration file is needed for the embedded default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz_server.errors import UserError


@dataclass(frozen=True)
class Setting:
    """One environment variable: its default (text, as it would be set; "" = unset) and what it does."""

    variable: str
    default: str
    help: str
    parse: Callable[[str], Any] = str
    internal: bool = False  # set by viz-server for its own processes, not by users


def _positive_int(text: str) -> int | None:
    return int(text) if text.strip().isdigit() and int(text) > 0 else None


def _flag(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
        raise ValueError
    return lowered in ("1", "true", "yes", "on")


def _whole_chunks(text: str) -> int:
    """A count of pictures that is a positive multiple of 64 (``picture_stream.CHUNK``)."""
    count = int(text)
    if count <= 0 or count % 64:
        raise ValueError(text)
    return count


def _device_name(text: str) -> str:
    """cpu, cuda, cuda:N or auto (its form only: whether the GPU is there is checked where the graph moves)."""
    text = text.strip().lower()
    if text not in ("auto", "cpu", "cuda") and not (text.startswith("cuda:") and text[5:].isdigit()):
        raise ValueError(text)
    return text


def _names(text: str) -> tuple[str, ...]:
    return tuple(name.strip().lower() for name in text.split(",") if name.strip())


SETTINGS = {
    setting.variable: setting
    for setting in (
        Setting("VIZ_SERVER_DATA", "~/.viz-server", "folder for the database, blobs, logs and the access token", lambda text: Path(text).expanduser()),
        Setting("VIZ_SERVER_DATABASE_URL", "", "SQLAlchemy URL (unset: SQLite in the data folder; postgresql+psycopg://... to scale out)"),
        Setting("VIZ_SERVER_BROKER_URL", "", "Celery broker, e.g. redis://host:6379/0 (unset: the embedded job runner)"),
        Setting("VIZ_SERVER_TOKEN", "", "access token (required for non-loopback binds; generated on first start when unset)"),
        Setting("VIZ_SERVER_MAX_JOBS", "2", "jobs the embedded runner runs at once", int),
        Setting("VIZ_SERVER_JOB_TIMEOUT", "900", "seconds before a job is stopped", float),
        Setting("VIZ_SERVER_MAX_UPLOAD_MB", "256", "largest upload accepted, in MiB", lambda text: int(float(text) * 2**20)),
        Setting(
            "VIZ_SERVER_STANDBY",
            "1",
            "1: keep a warm job process per job slot (imports done, last model loaded); 0: start each job cold",
            _flag,
        ),
        Setting("VIZ_SERVER_JOB_LEASE", "15", "seconds without a heartbeat after which a running job's process is taken for dead", float),
        Setting("VIZ_SERVER_ALLOWED_HOSTS", "", "host names (comma-separated) the server answers to besides the loopback names; * = any", _names),
        Setting(
            "VIZ_SERVER_THREADS",
            "",
            "threads per job process for torch and onnxruntime (unset: cores // jobs at once; a malformed value is ignored)",
            _positive_int,
        ),
        Setting(
            "VIZ_SERVER_JOB_MEMORY_MB",
            "",
            "memory a job process may use, in MiB (unset: three quarters of the machine's memory shared by the job slots); "
            "a model that would need more is refused at inspection, a job that grows past it fails with a sentence",
            _positive_int,
        ),
        Setting(
            "VIZ_SERVER_SHARD_PICTURES",
            "512",
            "pictures per shard when a job's work over a whole image set is split between processes (a multiple of 64)",
            _whole_chunks,
        ),
        Setting(
            "VIZ_SERVER_CACHE",
            "~/.cache/viz-server/models",
            "folder of the conversion cache (converted models by content hash)",
            lambda text: Path(text).expanduser(),
        ),
        Setting(
            "VIZ_SERVER_DEVICE",
            "cpu",
            "where the torch graph computes: cpu, cuda, cuda:N or auto (cuda when torch finds a GPU); `--device` on the command line",
            _device_name,
        ),
        Setting("VIZ_SERVER_HOST", "127.0.0.1", "address `viz-server serve` binds (any other than loopback requires the access token)"),
        Setting("VIZ_SERVER_PORT", "8000", "port `viz-server serve` listens on", int),
        Setting("VIZ_SERVER_DEBUG", "", "1: the command line shows tracebacks and library warnings instead of one sentence", _flag),
        Setting("VIZ_SERVER_PARENT_PID", "", "the server's process id, given to its job processes so that they die with it", _positive_int, internal=True),
    )
}


def setting(variable: str) -> Any:
    """The parsed value of one setting: from the environment when set there, else its default (None when it
    has none). A value that does not parse is refused in one sentence."""
    entry = SETTINGS[variable]
    text = os.environ.get(variable, "").strip()
    if not text:
        return entry.parse(entry.default) if entry.default else None
    try:
        return entry.parse(text)
    except ValueError:
        raise UserError(f"the environment variable {variable}={text[:40]!r} is not valid ({entry.help}).") from None


def override(variable: str, text: str) -> None:
    """Set a setting for this process and the processes it starts (a command-line option that is also a setting,
    such as ``--device``); a value that does not parse is refused in one sentence."""
    os.environ[variable] = text
    setting(variable)


@dataclass(frozen=True)
class Settings:
    """The server's settings (web process, job runner and workers)."""

    data_dir: Path
    database_url: str
    broker_url: str | None
    token: str | None
    max_jobs: int
    job_timeout: float
    max_upload_bytes: int
    job_retries: int = 1
    standby: bool = True
    allowed_hosts: tuple[str, ...] = ()
    job_lease: float = 15.0
    threads: int | None = None  # per job process; None: cores // max_jobs
    shard_pictures: int = 512  # pictures per shard of whole-set work (jobs.shards)
    job_memory_mb: int | None = None  # per job process; None: three quarters of the memory, shared by the job slots

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def job_memory_bytes(self) -> int:
        """A job process's memory budget (``VIZ_SERVER_JOB_MEMORY_MB``; by default three quarters of the machine's
        memory shared by the job slots, at least 1 GiB)."""
        if self.job_memory_mb:
            return self.job_memory_mb * 2**20
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 8 * 2**30
        return max(2**30, int(total * 0.75) // max(self.max_jobs, 1))


def load_settings(**overrides) -> Settings:
    """Settings from the environment; keyword arguments win (tests and the CLI use them)."""
    data_dir = Path(overrides.pop("data_dir", None) or setting("VIZ_SERVER_DATA"))
    values = {
        "data_dir": data_dir,
        "database_url": setting("VIZ_SERVER_DATABASE_URL") or f"sqlite:///{data_dir / 'viz.db'}",
        "broker_url": setting("VIZ_SERVER_BROKER_URL"),
        "token": setting("VIZ_SERVER_TOKEN"),
        "max_jobs": setting("VIZ_SERVER_MAX_JOBS"),
        "job_timeout": setting("VIZ_SERVER_JOB_TIMEOUT"),
        "max_upload_bytes": setting("VIZ_SERVER_MAX_UPLOAD_MB"),
        "standby": setting("VIZ_SERVER_STANDBY"),
        "job_lease": setting("VIZ_SERVER_JOB_LEASE"),
        "allowed_hosts": setting("VIZ_SERVER_ALLOWED_HOSTS") or (),
        "threads": setting("VIZ_SERVER_THREADS"),
        "shard_pictures": setting("VIZ_SERVER_SHARD_PICTURES"),
        "job_memory_mb": setting("VIZ_SERVER_JOB_MEMORY_MB"),
    }
    values.update(overrides)
    return Settings(**values)
