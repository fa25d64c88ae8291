"""Server settings, read once from the environment (no config file needed for the embedded default).

VIZ_SERVER_DATA          folder for the database, blobs and the access token (default ~/.viz-server)
VIZ_SERVER_DATABASE_URL  SQLAlchemy URL (default: SQLite in the data folder; postgresql://... to scale out)
VIZ_SERVER_BROKER_URL    Celery broker (e.g. redis://host:6379/0); unset = embedded job runner
VIZ_SERVER_TOKEN         access token (required for non-loopback binds; generated on first start if unset)
VIZ_SERVER_MAX_JOBS      jobs run at once by the embedded runner (default 2)
VIZ_SERVER_JOB_TIMEOUT   seconds before a job is killed (default 900)
VIZ_SERVER_MAX_UPLOAD_MB largest upload accepted (default 256)
VIZ_SERVER_STANDBY       1 = keep a job process warm per job slot (imports done) so jobs start at once; 0 = start each cold
VIZ_SERVER_JOB_LEASE     seconds without a heartbeat after which a running job's process is taken for dead (default 15)
VIZ_SERVER_ALLOWED_HOSTS host names (comma-separated) the server answers to besides the loopback names; * = any
VIZ_SERVER_THREADS       threads per job process for torch and onnxruntime (default: cores // VIZ_SERVER_MAX_JOBS)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
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

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"


def load_settings(**overrides) -> Settings:
    """Settings from the environment; keyword arguments win (tests and the CLI use them)."""
    env = os.environ
    data_dir = Path(overrides.pop("data_dir", None) or env.get("VIZ_SERVER_DATA") or Path.home() / ".viz-server")
    values = {
        "data_dir": data_dir,
        "database_url": env.get("VIZ_SERVER_DATABASE_URL") or f"sqlite:///{data_dir / 'viz.db'}",
        "broker_url": env.get("VIZ_SERVER_BROKER_URL") or None,
        "token": env.get("VIZ_SERVER_TOKEN") or None,
        "max_jobs": int(env.get("VIZ_SERVER_MAX_JOBS", "2")),
        "job_timeout": float(env.get("VIZ_SERVER_JOB_TIMEOUT", "900")),
        "max_upload_bytes": int(float(env.get("VIZ_SERVER_MAX_UPLOAD_MB", "256")) * 2**20),
        "standby": env.get("VIZ_SERVER_STANDBY", "1") != "0",
        "job_lease": float(env.get("VIZ_SERVER_JOB_LEASE", "15")),
        "allowed_hosts": tuple(name.strip().lower() for name in env.get("VIZ_SERVER_ALLOWED_HOSTS", "").split(",") if name.strip()),
    }
    values.update(overrides)
    return Settings(**values)
