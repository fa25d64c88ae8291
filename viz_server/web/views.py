"""Records -> the plain data that pages render and the JSON API returns (one shape for both)."""

from __future__ import annotations

from flask import url_for

from viz_server.store import JobRecord, ModelRecord, Store
from viz_server.store.database import ImageRecord


def _time(value) -> str | None:
    return value.isoformat(timespec="seconds") if value else None


def model_json(record: ModelRecord) -> dict:
    description = record.description or {}
    return {
        "id": record.id,
        "name": record.name,
        "sha256": record.sha256,
        "shipped": record.shipped,
        "status": record.status,
        "error": record.error,
        "spec_overrides": record.spec_overrides,
        "created": _time(record.created_at),
        "url": url_for("pages.model_page", model_id=record.id),
        **{key: description.get(key) for key in ("inputs", "outputs", "spec", "conversion", "layers", "metadata")},
    }


def image_json(record: ImageRecord) -> dict:
    return {
        "id": record.id, "name": record.name, "set": record.image_set, "label": record.label,
        "width": record.width, "height": record.height, "sha256": record.sha256,
        "thumbnail": url_for("pages.image_thumbnail", image_id=record.id),
    }


def job_json(store: Store, job: JobRecord) -> dict:
    model = store.db.get(ModelRecord, job.model_id)
    data = {
        "id": job.id,
        "kind": job.kind,
        "technique": job.technique,
        "model": {"id": job.model_id, "name": model.name if model else None},
        "report_id": job.report_id,
        "status": job.status,
        "progress": {"done": job.progress_done, "total": job.progress_total, "message": job.progress_message},
        "error": job.error,
        "params": job.params,
        "seed": job.seed,
        "image_ids": job.image_ids,
        "attempts": job.attempts,
        "created": _time(job.created_at),
        "started": _time(job.started_at),
        "finished": _time(job.finished_at),
        "seconds": job.seconds,
        "url": url_for("pages.job_page", job_id=job.id),
        "result": None,
    }
    if job.status == "done" and job.kind == "technique" and job.result:
        result = dict(job.result)
        result["artifacts"] = [
            {
                **artifact,
                "url": url_for("pages.job_artifact", job_id=job.id, name=artifact["name"]) if artifact.get("sha256") else None,
                "array_url": url_for("pages.job_array", job_id=job.id, name=artifact["array"]) if artifact.get("array") else None,
            }
            for artifact in result.get("artifacts", [])
        ]
        result["arrays_url"] = url_for("pages.job_arrays", job_id=job.id) if job.arrays_sha256 else None
        data["result"] = result
    elif job.result:
        data["result"] = job.result
    return data


def artifact_groups(result: dict) -> list[tuple[str, list[dict]]]:
    """Artifacts grouped (e.g. per input image) in first-seen order, so a group renders side by side."""
    groups: dict[str, list[dict]] = {}
    for artifact in result.get("artifacts", []):
        groups.setdefault(artifact.get("group") or "", []).append(artifact)
    return list(groups.items())
