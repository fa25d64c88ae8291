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


def job_summaries(store: Store, jobs: list[JobRecord]) -> list[dict]:
    """List views: every job without its result (one query for the model names, none for the results)."""
    names = {model.id: model.name for model in store.models()}
    return [job_summary(job, names.get(job.model_id)) for job in jobs]


def job_summary(job: JobRecord, model_name: str | None) -> dict:
    return {
        "id": job.id,
        "kind": job.kind,
        "technique": job.technique,
        "model": {"id": job.model_id, "name": model_name},
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
    }


def job_json(store: Store, job: JobRecord) -> dict:
    """One job with its result: artifact and array URLs added, points artifacts laid out for SVG."""
    model = store.db.get(ModelRecord, job.model_id)
    data = job_summary(job, model.name if model else None)
    data["result"] = None
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
        for artifact in result["artifacts"]:
            if artifact["kind"] == "points":
                artifact["svg_points"] = svg_points(artifact["rows"], job.image_ids)
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


PALETTE = ("#3a4fd1", "#e0a100", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666666", "#1f78b4")
SVG_SIZE, SVG_MARGIN, THUMB = 340, 12, 64


def svg_points(rows: list[list], image_ids: list[int]) -> list[dict]:
    """A points artifact's rows (x, y, label, image index) -> SVG positions, colours and hover thumbnails."""
    body = [row for row in rows[1:] if len(row) >= 4]
    if not body:
        return []
    xs, ys = [float(row[0]) for row in body], [float(row[1]) for row in body]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    labels = sorted({str(row[2]) for row in body})
    inner = SVG_SIZE - 2 * SVG_MARGIN
    points = []
    for x, y, row in zip(xs, ys, body):
        cx = SVG_MARGIN + (x - min(xs)) / span_x * inner
        cy = SVG_MARGIN + (1 - (y - min(ys)) / span_y) * inner
        index = int(row[3])
        thumb = url_for("pages.image_thumbnail", image_id=image_ids[index]) if 0 <= index < len(image_ids) else None
        points.append({"cx": round(cx, 1), "cy": round(cy, 1), "label": str(row[2]), "colour": PALETTE[labels.index(str(row[2])) % len(PALETTE)],
                       "thumb": thumb, "tx": round(min(cx + 6, SVG_SIZE - THUMB), 1), "ty": round(min(max(cy - THUMB / 2, 0), SVG_SIZE - THUMB), 1)})
    return points
