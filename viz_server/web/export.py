"""Reports as files: one self-contained HTML file (pictures inlined) and JSON."""

from __future__ import annotations

import base64
from collections import Counter

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


def compared_metrics(jobs: list[dict]) -> dict[str, dict]:
    """Model name -> metrics of each done job of a comparison (the job id added where a model appears twice)."""
    done = [job for job in jobs if job["status"] == JobStatus.DONE and job.get("result")]
    names = Counter(job["model"]["name"] for job in done)
    return {
        job["model"]["name"] if names[job["model"]["name"]] == 1 else f"{job['model']['name']} (job {job['id']})": job["result"].get("metrics") or {}
        for job in done
    }


def comparison_view(jobs: list[dict], plot_url: str | None = None) -> dict:
    """A comparison laid out for reading across models: the artifacts of each group (e.g. each input image) in one
    row with a column per model, one metrics table with a column per model, and one chart per series metric (at
    ``plot_url`` in a page, which draws it only when the browser asks; embedded in an export)."""
    from viz_server.comparison import comparison_plot, comparison_table, series_keys

    done = [job for job in jobs if job["status"] == JobStatus.DONE and job.get("result")]
    metrics = compared_metrics(jobs)
    order = list(dict.fromkeys(group for job in done for group, _ in job.get("groups", [])))
    rows = [(group, [dict(job.get("groups", [])).get(group, []) for job in done]) for group in order]
    plot = None
    if metrics and series_keys(metrics):
        plot = plot_url or f"data:image/png;base64,{base64.b64encode(comparison_plot(metrics) or b'').decode('ascii')}"
    return {"jobs": done, "names": list(metrics), "rows": rows, "table": comparison_table(metrics) if metrics else [], "plot": plot}


def render_html(store: Store, title: str, jobs, sections: list[dict] | None = None, kind: str = "job") -> str:
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
    compared = comparison_view(rendered) if kind == "compare" else None
    return render_template("export.html", title=title, jobs=rendered, sections=sections or [], compared=compared, contents=kind == "audit")
