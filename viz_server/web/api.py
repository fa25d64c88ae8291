"""The JSON API: everything the pages do, for scripts and CI pipelines (documented in README)."""

from __future__ import annotations

import json

from flask import Blueprint, jsonify, request, url_for

from viz_server.errors import UserError
from viz_server.installed import describe_plugins
from viz_server.store import JobRecord, ReportRecord
from viz_server.store.database import MAX_ID
from viz_server.web import actions, export
from viz_server.web.pages import REPORTS_PER_PAGE, _uploaded_files, dispatcher, report_page_number, store
from viz_server.web.security import has_control_characters
from viz_server.web.views import image_json, job_json, job_summaries, model_json

blueprint = Blueprint("api", __name__, url_prefix="/api")


MAX_JSON_DEPTH = 16
"""Deepest nesting of a JSON request body (the deepest a request needs is a spec's list inside the object: 3)."""


def _body() -> dict:
    """The request's JSON object; a body that is not one, or nested deeper than ``MAX_JSON_DEPTH``, is one sentence."""
    if not request.is_json:
        raise UserError("send a JSON object in the request body (Content-Type: application/json).")
    try:
        data = json.loads(request.get_data(cache=True))
    except RecursionError:  # nested deeper than the parser goes
        raise UserError(f"the JSON body is nested too deeply; at most {MAX_JSON_DEPTH} levels are accepted.") from None
    except ValueError:
        raise UserError("the request body is not valid JSON; send a JSON object (Content-Type: application/json).") from None
    if not isinstance(data, dict):
        raise UserError("send a JSON object in the request body (Content-Type: application/json).")
    check_json(data)
    return data


def check_json(value) -> None:
    """Refuse, in one sentence, JSON nested deeper than ``MAX_JSON_DEPTH`` or holding a control character in a
    key or a string (walked without recursion)."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, str) and has_control_characters(item):
            raise UserError("a JSON string holds a control character; send plain text.")
        if isinstance(item, dict):
            pending.extend((key, depth) for key in item)
            item = list(item.values())
        if isinstance(item, list):
            if depth > MAX_JSON_DEPTH:
                raise UserError(f"the JSON body is nested too deeply; at most {MAX_JSON_DEPTH} levels are accepted.")
            pending.extend((child, depth + 1) for child in item)


def _int_list(value, what: str) -> list[int]:
    if not isinstance(value, list) or not all(is_id(item) for item in value):
        raise UserError(f"{what} must be a list of record numbers (whole numbers from 1).")
    if len(value) > 1000:
        raise UserError(f"{what} lists {len(value)} numbers; give at most 1000.")
    return value


@blueprint.get("/openapi.json")
def openapi_description():
    from viz_server.web.openapi import openapi

    return jsonify(openapi())


@blueprint.get("/plugins")
def plugins():
    return jsonify(describe_plugins())


@blueprint.get("/models")
def models():
    return jsonify([model_json(record) for record in store().models()])


@blueprint.post("/models")
def upload_model():
    files = _uploaded_files("model")
    if not files:
        raise UserError("send the model as a multipart file field named 'model'.")
    spec = {key: value for key, value in request.form.items() if key != "name"}
    record, job = actions.upload_model(store(), request.form.get("name") or files[0][0].rsplit(".", 1)[0], files[0][1], spec)
    dispatcher().submit(job.id)
    return jsonify(model=model_json(record), job=job_json(store(), job)), 202


@blueprint.get("/models/<int:model_id>")
def model(model_id: int):
    return jsonify(model_json(actions.model_or_404(store(), model_id)))


@blueprint.delete("/models/<int:model_id>")
def delete_model(model_id: int):
    """Delete a model with the jobs made from it (see ``Store.deletion``); 400 while one of them runs."""
    return jsonify(store().delete("model", model_id))


@blueprint.delete("/images/<int:image_id>")
def delete_image(image_id: int):
    return jsonify(store().delete("image", image_id))


@blueprint.delete("/reports/<int:report_id>")
def delete_report(report_id: int):
    return jsonify(store().delete("report", report_id))


@blueprint.post("/models/<int:model_id>/spec")
def model_spec(model_id: int):
    job = actions.update_spec(store(), model_id, _body())
    dispatcher().submit(job.id)
    return jsonify(job=job_json(store(), job)), 202


@blueprint.post("/models/<int:model_id>/predictions")
def predict(model_id: int):
    """Run the model once on one stored image and decode what it says (the run form's target picker uses it)."""
    body = _body()
    image_id = body.get("image_id")
    job = actions.predict(store(), dispatcher(), model_id, image_id)
    return jsonify(job=job_json(store(), job)), 202


@blueprint.get("/images")
def images():
    return jsonify([image_json(record) for record in store().images(request.args.get("set"))])


@blueprint.post("/images")
def upload_images():
    stored = actions.upload_images(store(), _uploaded_files("images"), request.form.get("set") or "uploads", request.form.get("label"))
    return jsonify([image_json(record) for record in stored]), 201


@blueprint.get("/jobs")
def jobs():
    return jsonify(job_summaries(store(), store().jobs(with_results=False)))


@blueprint.post("/jobs")
def submit_job():
    body = _body()
    second = body.get("second_image_id")
    job = actions.submit_job(
        store(),
        dispatcher(),
        str(body.get("technique", "")),
        _model_id(body),
        _int_list(body.get("image_ids", []), "image_ids"),
        _params(body),
        seed=_seed(body),
        second_image_id=_optional_id(second, "second_image_id"),
    )
    return jsonify(job_json(store(), job)), 202


def is_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 < value <= MAX_ID


def _optional_id(value, what: str) -> int | None:
    if value is None:
        return None
    if not is_id(value):
        raise UserError(f"{what} must be the number of a stored record.")
    return value


def _params(body: dict) -> dict:
    params = body.get("params") or {}
    if not isinstance(params, dict):
        raise UserError("params must be a JSON object of technique parameters (see GET /api/plugins).")
    return params


def _model_id(body: dict) -> int:
    value = body.get("model_id")
    if not is_id(value):
        raise UserError("model_id must be the number of a stored model (see GET /api/models).")
    return value


def _seed(body: dict) -> int:
    seed = body.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**31:
        raise UserError("seed must be a whole number between 0 and 2147483647.")
    return seed


@blueprint.get("/jobs/<int:job_id>")
def job(job_id: int):
    return jsonify(job_json(store(), store().db.require(JobRecord, job_id, "job")))


@blueprint.post("/jobs/<int:job_id>/cancel")
def cancel(job_id: int):
    store().request_cancel(job_id)
    return jsonify(job_json(store(), store().db.get(JobRecord, job_id)))


@blueprint.post("/audits")
def audit():
    body = _body()
    techniques = body.get("techniques") or []
    if not isinstance(techniques, list) or not all(isinstance(name, str) for name in techniques):
        raise UserError("techniques must be a list of technique names (see GET /api/plugins).")
    second = _optional_id(body.get("second_image_id"), "second_image_id")
    report = actions.start_audit(store(), dispatcher(), _model_id(body), techniques, _int_list(body.get("image_ids", []), "image_ids"), second)
    return jsonify(export.report_json(store(), report)), 202


@blueprint.post("/comparisons")
def comparison():
    body = _body()
    report = actions.start_comparison(
        store(),
        dispatcher(),
        _int_list(body.get("model_ids", []), "model_ids"),
        str(body.get("technique", "")),
        _int_list(body.get("image_ids", []), "image_ids"),
        _params(body),
    )
    return jsonify(export.report_json(store(), report)), 202


@blueprint.get("/reports")
def reports():
    """A page of reports, newest first (``?page=N``, 50 a page); the total is in ``X-Total-Count``."""
    page = report_page_number()
    listed = store().reports(REPORTS_PER_PAGE, (page - 1) * REPORTS_PER_PAGE)
    response = jsonify(
        [
            {
                "id": report.id,
                "kind": report.kind,
                "title": report.title,
                "created": report.created_at.isoformat(timespec="seconds"),
                "url": url_for("pages.report_page", report_id=report.id),
            }
            for report in listed
        ]
    )
    response.headers["X-Total-Count"] = str(store().report_count())
    return response


@blueprint.get("/reports/<int:report_id>")
def report(report_id: int):
    return jsonify(export.report_json(store(), store().db.require(ReportRecord, report_id, "report")))
