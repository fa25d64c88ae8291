"""Records -> the plain data that pages render and the JSON API returns (one shape for both)."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from flask import url_for
from markupsafe import Markup, escape

from viz_server.presentation import ArtifactLinks, render_artifact
from viz_server.store import JobRecord, JobStatus, ModelRecord, Store
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
        **{key: description.get(key) for key in ("inputs", "outputs", "spec", "decoder", "conversion", "layers", "metadata")},
    }


def image_json(record: ImageRecord) -> dict:
    return {
        "id": record.id,
        "name": record.name,
        "set": record.image_set,
        "label": record.label,
        "width": record.width,
        "height": record.height,
        "sha256": record.sha256,
        "has_mask": bool(record.mask_sha256),
        "thumbnail": url_for("pages.image_thumbnail", image_id=record.id),
    }


def shape_html(shape: Any) -> Markup:
    """A tensor shape in brackets; a symbolic dimension longer than a short name (an exporter's formula, hundreds of
    characters for some detectors) is shown as ``?`` with the formula in its tooltip."""
    if not isinstance(shape, (list, tuple)):
        return escape(shape)
    shown, formulas = [], []
    for dimension in shape:
        text = "?" if dimension is None else str(dimension)
        if len(text) > 16:
            formulas.append(text)
            text = "?"
        shown.append(text)
    if not formulas:
        return escape(f"[{', '.join(shown)}]")
    return Markup('<span title="{}">[{}]</span>').format("; ".join(formulas)[:2000], ", ".join(shown))


def image_sets_view(images: list[dict]) -> list[dict]:
    """``image_json`` pictures grouped by set, in set-name order: each set's pictures, count, classes (label ->
    count, most first), masks, and a one-line summary of them."""
    groups: dict[str, list[dict]] = {}
    for image in images:
        groups.setdefault(image["set"], []).append(image)
    found = []
    for name in sorted(groups):
        members = groups[name]
        classes = Counter(image["label"] for image in members if image["label"])
        masks = sum(image["has_mask"] for image in members)
        unlabeled = sum(1 for image in members if not image["label"])
        parts = [f"{len(members)} picture{'s' if len(members) != 1 else ''}"]
        if classes:
            parts.append(f"{len(classes)} class{'es' if len(classes) != 1 else ''}" + (f", {unlabeled} unlabeled" if unlabeled else ""))
        if masks:
            parts.append(f"{masks} with object masks")
        found.append({"name": name, "images": members, "count": len(members), "classes": classes.most_common(), "masks": masks, "summary": " · ".join(parts)})
    return found


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
        "second_image_id": job.second_image_id,
        "attempts": job.attempts,
        "created": _time(job.created_at),
        "started": _time(job.started_at),
        "finished": _time(job.finished_at),
        "seconds": job.seconds,
        "url": url_for("pages.job_page", job_id=job.id),
    }


def job_json(store: Store, job: JobRecord) -> dict:
    """One job with its result: artifact and array URLs added."""
    model = store.db.get(ModelRecord, job.model_id)
    data = job_summary(job, model.name if model else None)
    data["result"] = None
    if job.status == JobStatus.DONE and job.kind == "technique" and job.result:
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


def target_choices(model: dict | None) -> list[tuple[str, str]]:
    """(value, text) of the targets a form offers for a stored model, from its task's decoder (a template global;
    the decoder reads the stored spec and output shape, no model code runs)."""
    from viz_server.tasks import output_decoders

    if not model or not model.get("spec"):
        return [("top1", "top1")]
    wanted = (model.get("decoder") or {}).get("name")
    decoder = next((d for d in output_decoders() if d.name == wanted), None)
    if decoder is None:
        return [("top1", "top1")]
    shape = ((model.get("outputs") or [{}])[0]).get("shape") or []
    return decoder.suggested_targets(model["spec"], shape)


def metric_html(value: Any, depth: int = 0) -> Markup:
    """A metric value as readable HTML (a template global): numbers to 4 significant digits, None as a dash,
    booleans as yes/no, short lists inline, lists of records and mappings as small tables; never Python's repr."""
    if value is None:
        return Markup("—")
    if isinstance(value, bool):
        return Markup("yes" if value else "no")
    if isinstance(value, float):
        return Markup(escape(f"{value:.4g}"))
    if isinstance(value, (int, str)):
        return Markup(escape(str(value)))
    if depth >= 3:
        return Markup(escape(json.dumps(value)[:300]))
    if isinstance(value, dict):
        if not value:
            return Markup("—")
        rows = "".join(f"<tr><th>{escape(str(key))}</th><td>{metric_html(item, depth + 1)}</td></tr>" for key, item in value.items())
        return Markup(f'<table class="data nested">{rows}</table>')
    if isinstance(value, list):
        if value and all(isinstance(item, dict) for item in value):
            keys = list(dict.fromkeys(key for item in value for key in item))
            header = "".join(f"<th>{escape(str(key))}</th>" for key in keys)
            rows = "".join("<tr>" + "".join(f"<td>{metric_html(item.get(key), depth + 1)}</td>" for key in keys) + "</tr>" for item in value)
            return Markup(f'<table class="data nested"><tr>{header}</tr>{rows}</table>')
        if len(value) > 64:
            shown = ", ".join(str(metric_html(item, depth + 1)) for item in value[:64])
            return Markup(f"{shown} … ({len(value)} values)")
        return Markup(", ".join(str(metric_html(item, depth + 1)) for item in value) or "—")
    return Markup(escape(str(value)))


def artifact_html(artifact: dict, image_ids: list[int], inline: bool = False) -> Markup:
    """One artifact as HTML through its kind's renderer (a template global): in a page with links to its
    bytes, array and the input thumbnails; in a self-contained export (``inline``) with its bytes embedded."""
    if inline:
        links = ArtifactLinks(src=artifact.get("inline"), inline=True)
    else:

        def thumbnail(index: int) -> str | None:
            return url_for("pages.image_thumbnail", image_id=image_ids[index]) if 0 <= index < len(image_ids) else None

        download = f"{artifact['url']}?download=1" if artifact.get("url") else None
        links = ArtifactLinks(src=artifact.get("url"), download=download, array=artifact.get("array_url"), thumbnail=thumbnail)
    return render_artifact(artifact, links)
