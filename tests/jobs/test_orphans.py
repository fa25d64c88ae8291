"""Deleting a model and submitting a job on it, at the same time, never leaves a job on a model that is gone: the
job's save locks and checks the model, the deletion deletes first and then checks for jobs. A job whose model is
gone anyway fails with a sentence, not an internal error."""

from __future__ import annotations

import threading

import pytest

from viz_server.config import load_settings
from viz_server.errors import UserError
from viz_server.jobs.execute import execute_job
from viz_server.store import JobRecord, ModelRecord, Store
from viz_server_models import shipped_models


@pytest.fixture
def store(tmp_path):
    return Store(load_settings(data_dir=tmp_path))


def add_model(store: Store, name: str) -> int:
    data = shipped_models()["digits_linear"].read_bytes() + name.encode()  # a distinct file each time (trailing bytes)
    record, _inspection = store.add_model(name, data)
    return record.id


def test_a_job_for_a_deleted_model_is_refused_and_nothing_is_stored(store):
    model_id = add_model(store, "gone")
    for job in store.jobs():
        store.db.update_job(job.id, status="cancelled")
    store.delete("model", model_id)
    with pytest.raises(UserError, match="was deleted while the job was being submitted"):
        store.create_job("saliency", model_id, [], {})
    assert not [job for job in store.jobs() if job.model_id == model_id]


def race(store: Store, model_id: int, submitters: int = 1) -> list[str]:
    """``submitters`` threads submit a job on the model while one deletes it, all released at once; what each got
    ("submitted" or "refused", "deleted" or "kept"). Its earlier jobs are cancelled first, so nothing blocks."""
    for job in store.jobs(limit=5000):
        if job.model_id == model_id and job.status in ("queued", "running"):
            store.db.update_job(job.id, status="cancelled")
    barrier = threading.Barrier(submitters + 1)
    outcomes: list[str] = []

    def attempt(work, done: str, refused: str) -> None:
        barrier.wait()
        try:
            work()
            outcomes.append(done)
        except UserError:
            outcomes.append(refused)

    threads = [
        threading.Thread(target=attempt, args=(lambda: store.create_job("saliency", model_id, [], {}), "submitted", "refused")) for _ in range(submitters)
    ]
    threads.append(threading.Thread(target=attempt, args=(lambda: store.delete("model", model_id), "deleted", "kept")))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def orphans(store: Store) -> list[int]:
    models = {record.id for record in store.models()}
    return [job.id for job in store.jobs(limit=5000) if job.model_id not in models]


def test_racing_deletes_and_submissions_leave_no_orphan_job(store):
    outcomes = [outcome for round_number in range(12) for outcome in race(store, add_model(store, f"race-{round_number}"))]
    assert not orphans(store), outcomes
    assert outcomes.count("deleted") + outcomes.count("kept") == 12 and len(outcomes) == 24


def test_a_job_whose_model_is_gone_fails_with_a_sentence(store):
    model_id = add_model(store, "vanishing")
    job = store.create_job("saliency", model_id, [], {})
    with store.db.session() as session:  # gone behind the store's back (an old orphan, a hand-edited database)
        session.query(ModelRecord).filter(ModelRecord.id == model_id).delete()
        session.commit()
    assert store.db.claim_job(job.id)
    assert execute_job(store, job.id) == "failed"
    failed = store.db.get(JobRecord, job.id)
    assert failed.error == f"model {model_id} was deleted after this job was submitted; nothing was run." and "internal error" not in failed.error
