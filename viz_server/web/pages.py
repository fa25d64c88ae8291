"""Server-rendered pages. No technique-specific templates: forms come from params schemas, results from
the Result contract (artifact groups, metrics, caveats, provenance)."""

from __future__ import annotations

import io
import json

from flask import Blueprint, Response, current_app, g, redirect, render_template, request, send_file, url_for

from viz_server.errors import NotFound, UserError
from viz_server.installed import check_applies, describe_plugins, suite, techniques
from viz_server.presentation import media_type
from viz_server.store import JobRecord, JobStatus, ModelStatus, ReportRecord, Store
from viz_server.store.database import MAX_ID, ImageRecord
from viz_server.techniques import DEFAULT_AUDIT_SUITES, LABELED_AUDIT_SUITES
from viz_server.web import actions, export
from viz_server.web.views import artifact_groups, image_json, image_sets_view, job_json, job_summaries, model_json

blueprint = Blueprint("pages", __name__)


def store() -> Store:
    return current_app.extensions["viz_store"]


def dispatcher():
    return current_app.extensions["viz_dispatcher"]


def _ids(values: list[str]) -> list[int]:
    ids = []
    for value in values:
        text = str(value).strip()
        if not text:
            continue
        if not (text.isascii() and text.isdigit() and len(text) <= 19 and 0 < int(text) <= MAX_ID):
            raise UserError("an image or model choice is not a record number; reload the page and choose again.")
        ids.append(int(text))
    return ids


def _form_seed() -> int:
    text = (request.form.get("seed") or "0").strip()
    if not (text.isascii() and text.isdigit() and len(text) <= 10 and int(text) < 2**31):
        raise UserError("seed must be a whole number between 0 and 2147483647.")
    return int(text)


def _uploaded_files(field: str) -> list[tuple[str, bytes]]:
    return [(upload.filename or "upload", upload.read()) for upload in request.files.getlist(field) if upload and upload.filename]


def _job_or_404(job_id: int) -> JobRecord:
    return store().db.require(JobRecord, job_id, "job")


# ---- overview, plugins -------------------------------------------------------------------------------


LISTED_JOBS = ("technique", "inspect")
"""The jobs the job lists show: what someone asked for. Predictions (the run form's preview of what the model says
about a picture) are shown on their model's page."""


@blueprint.get("/")
def index():
    return render_template(
        "index.html",
        models=[model_json(m) for m in store().models()],
        jobs=job_summaries(store(), store().jobs(limit=10, with_results=False, kinds=LISTED_JOBS)),
    )


@blueprint.get("/plugins")
def plugins_page():
    from viz_server.techniques import FAMILIES

    plugins = describe_plugins()
    entries = [(plugin["name"], technique) for plugin in plugins for technique in plugin["techniques"]]
    families = list(FAMILIES) + sorted({t["family"] for _, t in entries} - set(FAMILIES))
    by_family = [(family, [(name, t) for name, t in entries if t["family"] == family]) for family in families]
    return render_template("plugins.html", plugins=plugins, by_family=[(family, found) for family, found in by_family if found])


# ---- models ------------------------------------------------------------------------------------------


@blueprint.get("/models")
def models_page():
    return render_template("models.html", models=[model_json(m) for m in store().models()])


@blueprint.post("/models")
def upload_model():
    files = _uploaded_files("model")
    try:
        if not files:
            raise UserError("no file was chosen; choose an exported .onnx file to upload.")
        name = request.form.get("name") or files[0][0].rsplit(".", 1)[0]
        record, job = actions.upload_model(store(), name, files[0][1])
    except UserError as refusal:  # the same page, the sentence above the form
        return render_template("models.html", models=[model_json(m) for m in store().models()], error=str(refusal)), 400
    dispatcher().submit(job.id)
    return redirect(url_for("pages.model_page", model_id=record.id))


@blueprint.get("/models/<int:model_id>")
def model_page(model_id: int, typed: dict | None = None, error: UserError | None = None):
    """The model: inspection, conversion, spec form and layers. A spec change that was refused (here, with the
    sentence beside its field, or by its verification job) is shown with the values that were tried."""
    record = actions.model_or_404(store(), model_id)
    from viz_server.model.spec import SPEC_FIELDS

    refused_now = error is not None
    inspection = next((job for job in store().jobs(limit=500) if job.kind == "inspect" and job.model_id == model_id), None)
    trial = (inspection.params or {}).get("spec_overrides") if inspection is not None and inspection.status == JobStatus.FAILED else None
    if not refused_now and trial is not None:  # the last spec tried was refused by its verification
        typed = trial
        if record.status == ModelStatus.READY:  # (a failed model shows the sentence as its own error)
            error = UserError(f"This spec was refused and not saved (the model keeps its working spec): {inspection.error}")
    page = render_template(
        "model.html",
        model=model_json(record),
        spec_fields=SPEC_FIELDS,
        typed=typed or {},
        spec_error=error,
        inspection=job_json(store(), inspection) if inspection else None,
        predictions=_predictions(model_id),
        techniques=sorted(techniques().values(), key=lambda t: (t.family, t.name)),
    )
    return (page, 400) if refused_now else page


def _predictions(model_id: int) -> list[dict]:
    """The model's latest finished predictions, newest first, with their picture."""
    found = [job for job in store().jobs(limit=12, kinds=("predict",), model_id=model_id) if job.status == JobStatus.DONE and job.result]
    images = {record.id: image_json(record) for record in store().images_by_id([job.image_ids[0] for job in found if job.image_ids])}
    return [{"job": job.id, "image": images.get(job.image_ids[0]), "prediction": job.result.get("prediction", {})} for job in found if job.image_ids]


@blueprint.post("/models/<int:model_id>/spec")
def save_spec(model_id: int):
    from viz_server.model.spec import SPEC_FIELDS

    typed = {name: request.form.get(name, "") for name in SPEC_FIELDS}
    try:
        job = actions.update_spec(store(), model_id, typed)
    except UserError as refusal:  # the same form, the typed values kept, the sentence beside its field
        return model_page(model_id, typed, refusal)
    dispatcher().submit(job.id)
    return redirect(url_for("pages.model_page", model_id=model_id))


# ---- images ------------------------------------------------------------------------------------------


@blueprint.get("/images")
def images_page():
    return render_template("images.html", images=[image_json(i) for i in store().images()], sets=store().image_sets())


@blueprint.post("/images")
def upload_images():
    try:
        stored = actions.upload_images(store(), _uploaded_files("images"), request.form.get("image_set") or "uploads", request.form.get("label") or None)
    except UserError as refusal:
        page = render_template("images.html", images=[image_json(i) for i in store().images()], sets=store().image_sets(), error=str(refusal))
        return page, 400
    sets = sorted({record.image_set for record in stored})
    return redirect(url_for("pages.images_page", added=len(stored), to=",".join(sets)[:300]))


@blueprint.get("/images/sets/<path:name>")
def image_set_page(name: str):
    """One image set: counts per class, masks, every picture with its label and mask."""
    members = [image_json(i) for i in store().images(name)]
    if not members:
        raise NotFound(f"there is no image set named {name[:100]!r}.")
    (group,) = image_sets_view(members)
    return render_template("image_set.html", group=group, predictions=_latest_predictions({image["id"] for image in members}))


def _latest_predictions(image_ids: set[int], scanned: int = 500) -> dict[int, list[dict]]:
    """Picture id -> what each model said about it last (the newest ``scanned`` predictions), model by model."""
    names = {model.id: model.name for model in store().models()}
    found: dict[int, dict[int, dict]] = {}
    for job in store().jobs(limit=scanned, kinds=("predict",)):
        if job.status != JobStatus.DONE or not job.result or not job.image_ids or job.image_ids[0] not in image_ids:
            continue
        found.setdefault(job.image_ids[0], {}).setdefault(
            job.model_id, {"model": names.get(job.model_id, "a deleted model"), "prediction": job.result.get("prediction", {})}
        )
    return {image: list(by_model.values()) for image, by_model in found.items()}


@blueprint.get("/images/<int:image_id>/thumb.png")
def image_thumbnail(image_id: int):
    """A picture's thumbnail; ``?mask=1``: its object mask's."""
    record = store().db.require(ImageRecord, image_id, "image")
    wanted = record.mask_sha256 if request.args.get("mask") else record.sha256
    if not wanted:
        raise NotFound(f"image {image_id} has no object mask.")
    response = send_file(io.BytesIO(store().thumbnail_of(wanted)), mimetype="image/png")
    response.headers["Cache-Control"] = "private, max-age=86400"
    return response


# ---- running a technique -------------------------------------------------------------------------------


@blueprint.get("/run")
def run_page():
    """The run form; ``rerun=JOB`` fills it with that job's technique, model, parameters, seed and images."""
    rerun = _ids([request.args.get("rerun", "")])
    previous = store().db.get(JobRecord, rerun[0]) if rerun else None
    if previous is not None and previous.kind == "technique":
        values = {**(previous.params or {}), "seed": previous.seed, "second_image_id": previous.second_image_id}
        return _run_form(previous.technique or "", str(previous.model_id), values, list(previous.image_ids or []), rerun=previous.id)
    return _run_form(request.args.get("technique", ""), request.args.get("model"), {}, [])


def _model_kind(record) -> tuple[str, str]:
    """(the model's task, why it runs forward-only or ""): what decides which techniques apply to it."""
    description = record.description or {}
    return description.get("spec", {}).get("task") or "classification", description.get("conversion", {}).get("forward_only") or ""


def _run_form(technique_name: str, model_id: str | None, values: dict, chosen_images: list[int], error: UserError | None = None, rerun: int | None = None):
    models = [m for m in store().models() if m.status == ModelStatus.READY]
    chosen = next((m for m in models if str(m.id) == model_id), models[0] if models else None)
    task, forward_only = _model_kind(chosen) if chosen is not None else ("classification", "")
    available = {name: t for name, t in techniques().items() if chosen is None or t.applies(task, bool(forward_only))}  # what runs on it
    technique = available.get(technique_name) or next(iter(available.values()))
    notice = None
    if chosen is not None and technique_name in techniques() and technique_name not in available:  # asked for, does not apply
        try:
            check_applies(techniques()[technique_name], task, chosen.name, forward_only)
        except UserError as refusal:
            notice = f"{refusal} This form shows {technique.title} instead."
    page = render_template(
        "run.html",
        notice=notice,
        techniques=sorted(available.values(), key=lambda t: t.name),
        technique=technique,
        models=[model_json(m) for m in models],
        model=model_json(chosen) if chosen else None,
        images=[image_json(i) for i in store().images()],
        values=values,
        chosen_images=chosen_images,
        error=error,
        rerun=rerun,
    )
    return (page, 400) if error else page


def _params_from_form(technique) -> dict:
    raw = {}
    for param in technique.params:
        if param.kind == "bool":
            raw[param.name] = "true" if request.form.get(f"param_{param.name}") else "false"
        elif param.kind == "target" and request.form.get(f"param_{param.name}_other", "").strip():
            raw[param.name] = request.form[f"param_{param.name}_other"]  # a typed target wins over the list
        elif request.form.get(f"param_{param.name}", "") != "":
            raw[param.name] = request.form[f"param_{param.name}"]
    return raw


def _second_image() -> int | None:
    chosen = _ids([request.form.get("second_image_id", "")])
    return chosen[0] if chosen else None


def _chosen_images() -> list[int]:
    """The pictures a form chose: those ticked, every picture of each whole set ticked (in the set's order), and
    files added with it; each once."""
    image_ids = _ids(request.form.getlist("image_ids"))
    for name in request.form.getlist("image_sets"):
        image_ids += [record.id for record in store().images(name)]
    image_ids = list(dict.fromkeys(image_ids))
    uploads = _uploaded_files("images")
    if uploads:
        g.uploaded_image_ids = [record.id for record in actions.upload_images(store(), uploads)]
        image_ids += g.uploaded_image_ids
    return image_ids


@blueprint.after_request
def refused_forms_keep_no_pictures(response):
    """A form refused (4xx) forgets the pictures uploaded with it: a refused request stores nothing."""
    uploaded = g.pop("uploaded_image_ids", None)
    if uploaded and response.status_code >= 400:
        store().forget_images(uploaded)
    return response


@blueprint.post("/run")
def submit_run():
    from viz_server.installed import get_technique

    technique = get_technique(request.form.get("technique", ""))
    model_id = _ids([request.form.get("model_id", "")])
    if not model_id:
        raise UserError("choose a model to analyse.")
    raw = _params_from_form(technique)
    try:
        job = actions.submit_job(
            store(),
            dispatcher(),
            technique.name,
            model_id[0],
            _chosen_images(),
            raw,
            seed=_form_seed(),
            second_image_id=_second_image(),
        )
    except UserError as refusal:  # the same form again, the typed values kept, the sentence beside its field
        kept = {**raw, "seed": request.form.get("seed", "0")}
        return _run_form(technique.name, str(model_id[0]), kept, _ids(request.form.getlist("image_ids")), error=refusal)
    return redirect(url_for("pages.job_page", job_id=job.id))


# ---- jobs and results -------------------------------------------------------------------------------------


@blueprint.get("/jobs")
def jobs_page():
    return render_template("jobs.html", jobs=job_summaries(store(), store().jobs(with_results=False, kinds=LISTED_JOBS)))


@blueprint.get("/jobs/<int:job_id>")
def job_page(job_id: int):
    job = job_json(store(), _job_or_404(job_id))
    return render_template("job.html", job=job, groups=artifact_groups(job["result"]) if job["result"] and job["kind"] == "technique" else [])


@blueprint.post("/jobs/<int:job_id>/cancel")
def cancel_job(job_id: int):
    store().request_cancel(job_id)
    return redirect(url_for("pages.job_page", job_id=job_id))


def _artifact(job: JobRecord, name: str) -> dict:
    for artifact in (job.result or {}).get("artifacts", []):
        if artifact["name"] == name and artifact.get("sha256"):
            return artifact
    raise NotFound(f"job {job.id} has no artifact named {name}.")


@blueprint.get("/jobs/<int:job_id>/artifacts/<name>")
def job_artifact(job_id: int, name: str):
    artifact = _artifact(_job_or_404(job_id), name)
    return send_file(
        store().blobs.path(artifact["sha256"]), mimetype=media_type(artifact["kind"]), download_name=name, as_attachment=request.args.get("download") == "1"
    )


@blueprint.get("/jobs/<int:job_id>/arrays/<name>.npy")
def job_array(job_id: int, name: str):
    import numpy as np

    try:
        array = store().array(_job_or_404(job_id), name)
    except KeyError:
        raise NotFound(f"job {job_id} has no array named {name}.") from None
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    buffer.seek(0)
    return send_file(buffer, mimetype="application/octet-stream", as_attachment=True, download_name=f"{name}.npy")


@blueprint.get("/jobs/<int:job_id>/arrays.npz")
def job_arrays(job_id: int):
    job = _job_or_404(job_id)
    if not job.arrays_sha256:
        raise NotFound(f"job {job_id} has no arrays.")
    return send_file(store().blobs.path(job.arrays_sha256), mimetype="application/octet-stream", as_attachment=True, download_name=f"job-{job_id}-arrays.npz")


@blueprint.get("/jobs/<int:job_id>/export.html")
def job_export_html(job_id: int):
    job = _job_or_404(job_id)
    html = export.render_html(store(), f"{job.technique} job {job.id}", [job])
    return Response(html, mimetype="text/html", headers={"Content-Disposition": f'attachment; filename="job-{job.id}.html"'})


# ---- audits, comparisons, reports -------------------------------------------------------------------------


@blueprint.get("/models/<int:model_id>/audit")
def audit_page(model_id: int, checked: set[str] | None = None, chosen_images: list[int] = (), error: str | None = None):
    """The audit form: the task's techniques (the default suites checked), the images; after a refusal, the same
    form with the choices kept and the sentence above it."""
    record = actions.model_or_404(store(), model_id)
    task, reason = _model_kind(record)
    forward_only = bool(reason)
    image_techniques = [t for t in techniques().values() if "second_image" not in t.inputs and t.applies(task, forward_only)]
    stored = store().images()
    if checked is None:
        suites = LABELED_AUDIT_SUITES if any(image.label for image in stored) else DEFAULT_AUDIT_SUITES  # a labeled set: the dataset suite too
        checked = {name for suite_name in suites for name in suite(suite_name) if techniques()[name].applies(task, forward_only)}
    page = render_template(
        "audit.html",
        model=model_json(record),
        techniques=image_techniques,
        checked=checked,
        images=[image_json(i) for i in stored],
        chosen_images=list(chosen_images),
        error=error,
    )
    return (page, 400) if error else page


@blueprint.post("/models/<int:model_id>/audit")
def start_audit(model_id: int):
    chosen = request.form.getlist("techniques")
    try:
        report = actions.start_audit(store(), dispatcher(), model_id, chosen, _chosen_images(), _second_image())
    except UserError as refusal:
        return audit_page(model_id, set(chosen), _ids(request.form.getlist("image_ids")), str(refusal))
    return redirect(url_for("pages.report_page", report_id=report.id))


@blueprint.get("/compare")
def compare_page(technique_name: str | None = None, values: dict | None = None, chosen: tuple = ((), ()), error: UserError | None = None):
    """The comparison form; after a refusal, the same form with every choice kept and the sentence by its field."""
    available = techniques()
    technique = available.get(technique_name or request.args.get("technique", "")) or next(iter(available.values()))
    models = [model_json(m) for m in store().models() if m.status == ModelStatus.READY]
    page = render_template(
        "compare.html",
        techniques=sorted(available.values(), key=lambda t: t.name),
        technique=technique,
        models=models,
        images=[image_json(i) for i in store().images()],
        values=values or {},
        chosen_models=list(chosen[0]),
        chosen_images=list(chosen[1]),
        error=error,
    )
    return (page, 400) if error else page


@blueprint.post("/compare")
def start_compare():
    from viz_server.installed import get_technique

    technique = get_technique(request.form.get("technique", ""))
    raw = _params_from_form(technique)
    model_ids = _ids(request.form.getlist("model_ids"))
    try:
        report = actions.start_comparison(store(), dispatcher(), model_ids, technique.name, _chosen_images(), raw)
    except UserError as refusal:
        return compare_page(technique.name, raw, (model_ids, _ids(request.form.getlist("image_ids"))), refusal)
    return redirect(url_for("pages.report_page", report_id=report.id))


REPORTS_PER_PAGE = 50


def report_page_number() -> int:
    """The ``page`` query parameter (1-based); a bad one is a 400 with one sentence."""
    text = request.args.get("page", "1")
    if not (text.isascii() and text.isdigit() and len(text) <= 9 and int(text) >= 1):
        raise UserError(f"page {text[:20]!r} must be a whole number from 1 up.")
    return int(text)


@blueprint.get("/reports")
def reports_page():
    page = report_page_number()
    total = store().report_count()
    pages = max(1, -(-total // REPORTS_PER_PAGE))
    reports = store().reports(REPORTS_PER_PAGE, (page - 1) * REPORTS_PER_PAGE)
    return render_template("reports.html", reports=reports, page=page, pages=pages, total=total)


def _report_or_404(report_id: int) -> ReportRecord:
    return store().db.require(ReportRecord, report_id, "report")


@blueprint.get("/reports/<int:report_id>")
def report_page(report_id: int):
    report = _report_or_404(report_id)
    data = export.report_json(store(), report)
    for job in data["jobs"]:
        job["groups"] = artifact_groups(job["result"]) if job["result"] and job["kind"] == "technique" else []
    plot_url = url_for("pages.report_comparison_plot", report_id=report.id)
    compared = export.comparison_view(data["jobs"], plot_url) if report.kind == "compare" else None
    return render_template("report.html", report=report, jobs=data["jobs"], sections=data["sections"], compared=compared)


@blueprint.get("/reports/<int:report_id>/comparison.png")
def report_comparison_plot(report_id: int):
    """The comparison's chart, drawn only when a page shows it (never on every page view of the report)."""
    from viz_server.comparison import comparison_plot

    plot = comparison_plot(export.compared_metrics(export.report_json(store(), _report_or_404(report_id))["jobs"]))
    if plot is None:
        raise NotFound(f"report {report_id} has no series metric to chart.")
    return Response(plot, mimetype="image/png")


@blueprint.get("/reports/<int:report_id>/export.html")
def report_export_html(report_id: int):
    report = _report_or_404(report_id)
    html = export.render_html(store(), report.title, store().jobs(report_id=report.id), export.report_json(store(), report)["sections"], report.kind)
    return Response(html, mimetype="text/html", headers={"Content-Disposition": f'attachment; filename="report-{report.id}.html"'})


@blueprint.get("/reports/<int:report_id>/export.json")
def report_export_json(report_id: int):
    report = _report_or_404(report_id)
    data = export.report_json(store(), report)
    return Response(json.dumps(data, indent=2), mimetype="application/json", headers={"Content-Disposition": f'attachment; filename="report-{report.id}.json"'})


# ---- deleting ----------------------------------------------------------------------------------------------
DELETABLE = {"models": "model", "images": "image", "reports": "report"}


@blueprint.get("/models/<int:record_id>/delete", defaults={"plural": "models"})
@blueprint.get("/images/<int:record_id>/delete", defaults={"plural": "images"})
@blueprint.get("/reports/<int:record_id>/delete", defaults={"plural": "reports"})
def confirm_delete(plural: str, record_id: int):
    """What a deletion takes with it, said before anything changes; the button posts the deletion."""
    plan = store().deletion(DELETABLE[plural], record_id)
    return render_template("delete.html", plan=plan, plural=plural, record_id=record_id)


@blueprint.post("/models/<int:record_id>/delete", defaults={"plural": "models"})
@blueprint.post("/images/<int:record_id>/delete", defaults={"plural": "images"})
@blueprint.post("/reports/<int:record_id>/delete", defaults={"plural": "reports"})
def delete_record(plural: str, record_id: int):
    store().delete(DELETABLE[plural], record_id)
    return redirect(url_for(f"pages.{plural}_page"))


@blueprint.get("/favicon.ico")
def favicon():
    """Browsers ask for /favicon.ico whatever the page links; answer with the SVG icon."""
    return current_app.send_static_file("favicon.svg")
