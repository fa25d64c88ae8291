"""Run one stored job to completion: inspect a model, or run a technique and store its Result."""

from __future__ import annotations

import time
from collections.abc import Callable

from viz_server.errors import Cancelled, NotFound, UserError
from viz_server.jobs.failures import INTERNAL_ERROR, OUT_OF_MEMORY, out_of_memory
from viz_server.jobs.leases import heartbeat
from viz_server.jobs.stored import load_stored_model, stored_pictures
from viz_server.model.cost import check_budget
from viz_server.model.guard import guard
from viz_server.store import JobRecord, JobStatus, ModelRecord, ModelStatus, Store
from viz_server.store.database import ImageRecord, now

PROGRESS_INTERVAL = 0.25  # seconds between progress writes / cancellation checks


def execute_job(store: Store, job_id: int, submit_shard: Callable[[int], None] | None = None) -> str:
    """Execute a job that is already claimed (status running), renewing its lease as it works; return its final
    status. Its job time (what the timeout counts) starts here, after the process's imports. Its work over a
    whole image set is split into shards (``jobs.shards``) sent to ``submit_shard`` (under scale-out)."""
    job = store.db.get(JobRecord, job_id)
    if job is None:
        return "missing"
    store.db.update_job(job_id, started_at=now())
    with heartbeat(store, job_id):
        return _execute(store, job, submit_shard)


def _execute(store: Store, job: JobRecord, submit_shard: Callable[[int], None] | None) -> str:
    job_id = job.id
    model_record = store.db.get(ModelRecord, job.model_id)
    try:
        if model_record is None:  # deleted after the job was accepted
            raise UserError(f"model {job.model_id} was deleted after this job was submitted; nothing was run.")
        if job.kind == "inspect":
            _inspect(store, job, model_record)
        elif job.kind == "predict":
            _predict(store, job, model_record)
        else:
            _run_technique(store, job, model_record, submit_shard)
        return JobStatus.DONE
    except Cancelled:
        store.db.update_running(job_id, status=JobStatus.CANCELLED, finished_at=now(), progress_message="cancelled")
        return JobStatus.CANCELLED
    except (UserError, NotFound) as exc:  # a sentence for the user (a picture deleted meanwhile: not found)
        _fail(store, job, str(exc))
        return JobStatus.FAILED
    except Exception as exc:  # noqa: BLE001 - a worker must record every failure, never die silently
        if out_of_memory(exc):  # torch's and onnxruntime's too
            budget = store.settings.job_memory_bytes / 2**20
            _fail(store, job, f"{OUT_OF_MEMORY} (its budget is {budget:,.0f} MiB, VIZ_SERVER_JOB_MEMORY_MB); use fewer or smaller images.")
        else:
            _fail(store, job, f"{INTERNAL_ERROR} ({type(exc).__name__}: {str(exc)[:300]}); please report it.")
        return JobStatus.FAILED


def _fail(store: Store, job: JobRecord, message: str) -> None:
    if store.db.update_running(job.id, status=JobStatus.FAILED, error=message, finished_at=now(), progress_message="failed") and job.kind == "inspect":
        store.inspection_ended(job, message)


def _spec_trial(job: JobRecord) -> bool:
    return "spec_overrides" in (job.params or {})


def _inspect(store: Store, job: JobRecord, record: ModelRecord) -> None:
    store.db.update_job(job.id, progress_done=0, progress_total=1, progress_message="guard, normalize, convert, verify")
    trial = job.params.get("spec_overrides") if _spec_trial(job) else None
    check_budget(guard(store.blobs.read(record.sha256)), store.settings.job_memory_bytes)  # before a graph is built from it
    model = load_stored_model(store, record, trial)
    if store.db.update_running(
        job.id, status=JobStatus.DONE, progress_done=1, finished_at=now(), progress_message="model ready", result={"conversion": model.conversion.to_json()}
    ):
        saved = {"spec_overrides": trial} if trial is not None else {}
        store.db.update_model(record.id, status=ModelStatus.READY, description=model.describe(), error=None, **saved)


def _predict(store: Store, job: JobRecord, record: ModelRecord) -> None:
    """What the model says about one image, read by its task's decoder (boxes in model input pixels)."""
    from viz_server.model.images import decode_image

    if record.status == ModelStatus.FAILED:
        raise UserError(f"model {record.name} could not be loaded: {record.error}")
    model = load_stored_model(store, record)
    name, data = _image_bytes(store, job.image_ids[0])
    batch = model.spec.preprocess([decode_image(data, name, fit=(model.spec.height, model.spec.width))])
    result = {"task": model.spec.task, "size": [model.spec.height, model.spec.width], "prediction": model.decode(model.predict(batch))[0]}
    store.db.update_running(job.id, status=JobStatus.DONE, progress_done=1, progress_total=1, finished_at=now(), progress_message="done", result=result)


def _run_technique(store: Store, job: JobRecord, record: ModelRecord, submit_shard: Callable[[int], None] | None) -> None:
    from viz_server.jobs.shards import Spread
    from viz_server.runner import run_technique

    if record.status == ModelStatus.FAILED:
        raise UserError(f"model {record.name} could not be loaded: {record.error}")
    model = load_stored_model(store, record)
    # read on access: a technique over a whole set decodes it chunk by chunk, and memory holds one chunk's bytes
    images, labels, masks = stored_pictures(store, job.image_ids)
    second = _image_bytes(store, job.second_image_id) if job.second_image_id else None

    last = {"time": 0.0, "cancel": False}

    def on_progress(done: int, total: int, message: str) -> None:
        if time.monotonic() - last["time"] >= PROGRESS_INTERVAL or done >= total:
            last["time"] = time.monotonic()
            store.db.update_job(job.id, progress_done=int(done), progress_total=int(total), progress_message=str(message)[:300])

    def is_cancelled() -> bool:
        if time.monotonic() - last.get("checked", 0.0) >= PROGRESS_INTERVAL:
            last["checked"] = time.monotonic()
            current = store.db.get(JobRecord, job.id)
            last["cancel"] = bool(current and current.cancel_requested)
        return last["cancel"]

    result = run_technique(
        job.technique,
        model,
        images,
        job.params,
        seed=job.seed,
        second_image=second,
        labels=labels,
        masks=masks,
        on_progress=on_progress,
        is_cancelled=is_cancelled,
        spread=Spread(store, record.id, job.image_ids, submit_shard, is_cancelled),
    )
    store.save_result(job.id, result)


def _image_bytes(store: Store, image_id: int) -> tuple[str, bytes]:
    record = store.db.get(ImageRecord, image_id)
    if record is None:
        raise UserError(f"image {image_id} no longer exists; pick another image.")
    return record.name, store.blobs.read(record.sha256)
