"""What the pages and the JSON API both do, written once: uploads, job submission, audits, comparisons.

Every function validates untrusted input and raises ``UserError`` with one sentence; none runs model code
(that happens in job processes).
"""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

from viz_server.errors import UserError
from viz_server.image_sets import iter_archive, pair_masks
from viz_server.installed import check_applies, get_technique, techniques
from viz_server.model.guard import looks_like_onnx
from viz_server.store import ImageRecord, JobRecord, ModelRecord, ModelStatus, ReportRecord, Store
from viz_server.techniques import MAX_DATASET_PICTURES, MAX_IMAGES_PER_RUN, validate_params


def upload_model(store: Store, name: str, data: bytes, spec_overrides: dict | None = None):
    """Store an uploaded model and queue its inspection; the guard's sentence comes back on its job."""
    if not data:
        raise UserError("the uploaded model file is empty; choose an exported .onnx file.")
    if not looks_like_onnx(data):  # nothing stored: no failed row for a picture or an archive sent as a model
        raise UserError("the uploaded file is not an ONNX model (it does not read as one); choose an exported .onnx file.")
    spec = _spec_overrides(spec_overrides or {})
    return store.add_model(name, data, spec_overrides=spec)


def _spec_overrides(raw: dict[str, Any]) -> dict[str, Any]:
    from viz_server.model.spec import SPEC_FIELDS, parse_field

    overrides = {}
    for key, value in raw.items():
        if value in (None, "", []):
            continue
        if key not in SPEC_FIELDS:
            raise UserError(f"'{key}' is not a model spec field; use one of {', '.join(SPEC_FIELDS)}.")
        parse_field(key, value)  # one sentence if it is malformed
        overrides[key] = value if isinstance(value, str) else json.dumps(value)
    return overrides


def update_spec(store: Store, model_id: int, raw: dict[str, Any]):
    """Try a changed spec: checked here against the stored inspection (labels per output, a fixed input size,
    values per channel: one sentence, nothing changed), then verified by an inspection job that saves it only when
    the model loads and verifies with it; otherwise the model keeps its working spec. A submitted value equal to
    what the model has now, for a field the user never set, is left out, so it keeps its source (and its
    "guessed" flag)."""
    record = model_or_404(store, model_id)
    description = record.description or {}
    current = description.get("spec") or {}
    previous = dict(record.spec_overrides or {})
    overrides = {}
    for key, value in _spec_overrides(raw).items():
        if key not in previous and current and _same(key, value, current):
            continue  # the pre-filled guess or metadata value sent back unchanged
        overrides[key] = value
    _check_spec(description, overrides)
    return store.queue_inspection(record.id, spec_overrides=overrides)


def _same(key: str, value: str, current: dict[str, Any]) -> bool:
    from viz_server.model.spec import SPEC_FIELDS, parse_field

    try:
        return parse_field(key, value) == parse_field(key, SPEC_FIELDS[key].shown(current))
    except (UserError, KeyError, TypeError):
        return False


def _check_spec(description: dict[str, Any], overrides: dict[str, Any]) -> None:
    """What the loader will refuse in a spec, checked without model code against the stored inspection."""
    from viz_server.model.spec import build_spec

    spec, inputs = description.get("spec"), description.get("inputs")
    if not spec or not inputs:
        return  # never inspected: the inspection job checks it
    dims = [dim if isinstance(dim, int) and dim > 0 else None for dim in inputs[0]["shape"]]
    task = str(overrides.get("task") or spec.get("task") or "classification")
    # another task may read another number of classes from the output (a detector's 4 + C): its job checks them
    classes = (spec.get("num_classes") or 0) if task == spec.get("task") else 0
    build_spec(spec["input_name"], dims, classes, description.get("metadata") or {}, overrides, task=task)


def upload_images(store: Store, files: list[tuple[str, bytes]], image_set: str = "uploads", label: str | None = None) -> list[ImageRecord]:
    """Store pictures, all or none; a .zip is read as an image set with one sub-folder per class (ImageFolder style)."""
    if not files:
        raise UserError("no pictures were uploaded; choose PNG or JPEG files or a .zip of class folders.")

    def pictures():
        loose = []
        for name, data in files:
            if name.lower().endswith(".zip") or data[:4] == b"PK\x03\x04":
                set_name = image_set if image_set != "uploads" else PurePosixPath(name).stem
                for file_name, content, folder, mask in pair_masks(list(iter_archive(name, data))):
                    yield file_name, content, set_name, folder, mask
            else:
                loose.append((name, data, label))
        for name, data, picture_label, mask in pair_masks(loose):
            yield name, data, image_set, picture_label, mask

    stored = store.add_images(pictures())
    if not stored:
        raise UserError("no pictures were uploaded; choose PNG or JPEG files or a .zip of class folders.")
    return stored


def model_or_404(store: Store, model_id: int) -> ModelRecord:
    return store.db.require(ModelRecord, model_id, "model")


def submit_job(
    store: Store,
    dispatcher,
    technique_name: str,
    model_id: int,
    image_ids: list[int],
    raw_params: dict[str, Any],
    seed: int = 0,
    second_image_id: int | None = None,
):
    """Validate and queue one job (a mistake is a 4xx at once, not a failed job later)."""
    job = prepared_job(store, technique_name, model_id, image_ids, raw_params, seed, second_image_id)
    store.save_jobs([job])
    dispatcher.submit(job.id)
    return job


def prepared_job(
    store: Store,
    technique_name: str,
    model_id: int,
    image_ids: list[int],
    raw_params: dict[str, Any],
    seed: int = 0,
    second_image_id: int | None = None,
) -> JobRecord:
    """A job record, checked in full against the technique, the model and the images, not yet stored."""
    technique = get_technique(technique_name)
    params = validate_params(technique.params, raw_params)
    record = model_or_404(store, model_id)
    if record.status == ModelStatus.FAILED:
        raise UserError(f"model {record.name} could not be loaded ({record.error}); upload a fixed export.")
    _check_model_params(technique, params, record)
    if {"image", "image_set", "dataset"} & set(technique.inputs) and not image_ids:
        raise UserError(f"{technique.title} needs at least one image; pick or upload one.")
    limit = MAX_DATASET_PICTURES if "dataset" in technique.inputs else MAX_IMAGES_PER_RUN
    if len(image_ids) > limit:
        raise UserError(f"{len(image_ids)} images were chosen; at most {limit} fit in one {technique.title} job.")
    pictures = []
    for image_id in image_ids + ([second_image_id] if second_image_id else []):
        picture = store.db.get(ImageRecord, image_id)
        if picture is None:
            raise UserError(f"there is no image {image_id}; pick one from the list.")
        pictures.append(picture)
    if "image_set" in technique.inputs:
        _check_set_labels(technique, record, pictures[: len(image_ids)])
    if "second_image" in technique.inputs and not second_image_id:
        raise UserError(f"{technique.title} needs a second image.")
    if not 0 <= int(seed) < 2**31:
        raise UserError("seed must be a whole number between 0 and 2147483647.")
    return JobRecord(
        kind="technique",
        technique=technique.name,
        model_id=record.id,
        image_ids=list(image_ids),
        params=params,
        seed=int(seed),
        second_image_id=second_image_id,
    )


def _check_set_labels(technique, record: ModelRecord, pictures: list[ImageRecord]) -> None:
    """A set whose pictures all carry labels is read against them (accuracy, robustness): each label must name one
    of the classifier's classes (or be a class index), refused here in one sentence rather than when the job runs."""
    spec = (record.description or {}).get("spec") or {}
    if spec.get("task", "classification") != "classification" or not pictures or not all(picture.label for picture in pictures):
        return
    labels = [str(label) for label in spec.get("labels") or []]
    known = {label.lower() for label in labels}
    count = spec.get("num_classes") or len(labels)
    for picture in pictures:
        label = str(picture.label)
        if label.lower() in known or (not labels and label.isascii() and label.isdigit() and int(label) < count):
            continue
        offered = ", ".join(labels[:8]) + (" ..." if len(labels) > 8 else "") if labels else f"class indices 0-{count - 1}"
        raise UserError(
            f"{technique.title} reads the set's labels, and {picture.name} is labeled {label[:60]!r}, which is not one of "
            f"{record.name}'s classes ({offered}); choose pictures labeled with its classes, or unlabeled ones."
        )


def predict(store: Store, dispatcher, model_id: int, image_id: Any):
    """Queue a prediction job for one stored image on a ready model."""
    record = model_or_404(store, model_id)
    if record.status != ModelStatus.READY:
        raise UserError(f"model {record.name} is not ready ({record.status}); wait for its inspection or upload a fixed export.")
    if not isinstance(image_id, int) or isinstance(image_id, bool) or store.db.get(ImageRecord, image_id) is None:
        raise UserError("image_id must be the number of a stored image (see GET /api/images).")
    job = store.queue_prediction(record.id, image_id)
    dispatcher.submit(job.id)
    return job


def _check_model_params(technique, params: dict[str, Any], record: ModelRecord) -> None:
    """The task, classification targets and layers can be checked against the stored inspection, without loading
    the model (other tasks' targets depend on the model's output and are checked by the job)."""
    description = record.description or {}
    spec = description.get("spec", {})
    check_applies(technique, spec.get("task") or "classification", record.name, description.get("conversion", {}).get("forward_only", ""))
    labels = spec.get("labels") or []
    num_classes = spec.get("num_classes") or 0
    layer_names = {layer["name"] for layer in description.get("layers", {}).get("layers", [])}
    for param in technique.params:
        value = str(params[param.name]).strip()
        if param.kind == "target" and spec.get("task", "classification") == "classification" and value.lower() not in ("top1", "top-1", "predicted", ""):
            index = value[6:] if value.lower().startswith("index:") else value
            if value in labels or value.lower() in (label.lower() for label in labels):
                pass  # a label always wins
            elif index.lstrip("-").isdigit():
                if num_classes and not 0 <= int(index) < num_classes:
                    raise UserError(f"class {index} is out of range: {record.name} has {num_classes} classes.")
            elif labels:
                raise UserError(f"class '{value}' is not one of {record.name}'s labels; pick one from the list.")
        if param.kind == "layer" and value and layer_names and value not in layer_names:
            raise UserError(f"{record.name} has no layer named '{value}'; pick one from the list.")


def start_audit(store: Store, dispatcher, model_id: int, technique_names: list[str], image_ids: list[int], second_image_id: int | None = None) -> ReportRecord:
    """One report: every chosen technique, with default params, on the same model and images (the per-picture
    techniques on a class-balanced sample of ``AUDIT_SAMPLE``; the dataset suite on all). An embedding model's
    targets compare with a second image, so auditing its explanations needs one."""
    record = model_or_404(store, model_id)
    names = _image_techniques(technique_names)
    available = techniques()
    targeted = [name for name in names if any(param.kind == "target" for param in available[name].params)]
    task = (record.description or {}).get("spec", {}).get("task")
    if task == "embedding" and targeted and not second_image_id:
        raise UserError(
            f"{record.name} is an embedding model: its explanations ({', '.join(targeted[:3])}) show what makes a picture similar to a "
            "second image; choose one (CLI: --second-image; API: second_image_id)."
        )
    sample = _per_picture_sample(store, image_ids)
    jobs = [
        prepared_job(store, name, record.id, image_ids if "dataset" in available[name].inputs else sample, {}, second_image_id=second_image_id)
        for name in names
    ]  # all checked first
    return _queue_report(store, dispatcher, ReportRecord(kind="audit", title=f"Audit of {record.name}"), jobs)


def start_comparison(store: Store, dispatcher, model_ids: list[int], technique_name: str, image_ids: list[int], raw_params: dict[str, Any]) -> ReportRecord:
    """One report: the same technique, params and images on two or more models, shown side by side."""
    unique = list(dict.fromkeys(model_ids))
    if len(unique) < 2:
        raise UserError("pick at least two models to compare.")
    names = [model_or_404(store, model_id).name for model_id in unique]
    jobs = [prepared_job(store, technique_name, model_id, image_ids, raw_params) for model_id in unique]  # all checked first
    return _queue_report(store, dispatcher, ReportRecord(kind="compare", title=f"{technique_name}: {' vs '.join(names)}"[:300]), jobs)


def _queue_report(store: Store, dispatcher, report: ReportRecord, jobs: list[JobRecord]) -> ReportRecord:
    """Store a report and its checked jobs in one transaction, then queue the jobs: a refused request stores nothing.
    The jobs keep their order on the page but leave the queue longest-expected first (by the seconds their
    techniques took on this server before, else by their declared ``expected_cost``), so the longest one does
    not start last and hold up the whole report."""
    names = sorted({job.technique for job in jobs if job.technique})
    expected: dict[str, float] = store.typical_seconds(names, jobs[0].model_id) if jobs else {}
    if set(expected) != set(names):  # seconds and declared costs do not mix: all measured, or all declared
        available = techniques()
        expected = {name: available[name].expected_cost for name in names if name in available}
    order = sorted(range(len(jobs)), key=lambda index: -expected.get(jobs[index].technique or "", 0.0))
    store.save_jobs(jobs, report, queue_order=order)
    for index in order:
        dispatcher.submit(jobs[index].id)
    return report


AUDIT_SAMPLE = 32
"""An audit's per-picture techniques (maps, attacks) run on at most this many of its pictures, the classes taking
turns; the dataset suite reads them all."""


def _per_picture_sample(store: Store, image_ids: list[int]) -> list[int]:
    """The first ``AUDIT_SAMPLE`` pictures, taking one of each class in turn (all of them when there are fewer)."""
    if len(image_ids) <= AUDIT_SAMPLE:
        return list(image_ids)
    by_label: dict[str | None, list[int]] = {}
    for image_id in image_ids:
        image = store.db.get(ImageRecord, image_id)
        by_label.setdefault(image.label if image else None, []).append(image_id)
    queues = list(by_label.values())
    chosen: list[int] = []
    while len(chosen) < AUDIT_SAMPLE:
        for queue in queues:
            if queue and len(chosen) < AUDIT_SAMPLE:
                chosen.append(queue.pop(0))
    return chosen


def _image_techniques(names: list[str]) -> list[str]:
    available = techniques()
    if not names:
        raise UserError("pick at least one technique for the audit.")
    for name in names:
        if name not in available:
            raise UserError(f"no technique named '{name}'.")
        if "second_image" in available[name].inputs:
            raise UserError(f"{name} needs a second image and cannot be part of an audit.")
    return names
