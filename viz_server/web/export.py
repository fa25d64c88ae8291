"""Reports as files: one self-contained HTML file (pictures inlined) and JSON."""

from __future__ import annotations

import base64

from flask import render_template

from viz_server.presentation import media_type, report_headlines, report_sections
from viz_server.store import JobStatus, ModelRecord, ReportRecord, Store
from viz_server.web.views import artifact_groups, job_json, model_json


def report_json(store: Store, report: ReportRecord) -> dict:
    """A report with its jobs and results, and the plugins' summary sections."""
    jobs = [job_json(store, job) for job in store.jobs(report_id=report.id)]
    done = sum(job["status"] == JobStatus.DONE for job in jobs)
    data = {
        "id": report.id,
        "kind": report.kind,
        "title": report.title,
        "created": report.created_at.isoformat(timespec="seconds"),
        "status": "done" if done == len(jobs) else "running" if any(j["status"] in (JobStatus.QUEUED, JobStatus.RUNNING) for j in jobs) else "partial",
        "jobs": jobs,
    }
    model_ids = sorted({job["model"]["id"] for job in jobs})
    data["models"] = [model_json(record) for record in (store.db.get(ModelRecord, model_id) for model_id in model_ids) if record is not None]
    data["headline"] = report_headlines(data)
    data["sections"] = [section.to_json() for section in report_sections(data)]
    return data


def render_html(store: Store, title: str, jobs, sections: list[dict] | None = None) -> str:
    """A single HTML file a reviewer can archive or mail: every picture is a data: URI, no external links."""
    rendered = []
    for job in jobs:
        data = job_json(store, job)
        if data["result"] and data["kind"] == "technique":
            for artifact in data["result"].get("artifacts", []):
                if artifact.get("sha256"):
                    encoded = base64.b64encode(store.blobs.read(artifact["sha256"])).decode("ascii")
                    artifact["inline"] = f"data:{media_type(artifact['kind'])};base64,{encoded}"
            data["groups"] = artifact_groups(data["result"])
        else:
            data["groups"] = []
        rendered.append(data)
    return render_template("export.html", title=title, jobs=rendered, sections=sections or [])
