"""Whole-set work split into stored shards (``viz_server.jobs.shards``): merged rows equal one process's bit for
bit, whichever process ran each shard; shards are shared by the jobs that need the same work; a dead holder's
shard is taken over, a failing one says why (and is tried again by the next job), a cancelled job hands its shard
back. The two-worker Celery run is in ``test_scale_out``."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from viz_server.config import load_settings
from viz_server.errors import Cancelled, UserError
from viz_server.image_sets import pair_masks, read_image_set
from viz_server.jobs import shards
from viz_server.jobs.stored import load_stored_model, stored_pictures
from viz_server.picture_stream import PictureStream, per_picture
from viz_server.store import JobStatus, ShardRecord, Store
from viz_server.store.database import now
from viz_server_models import shapes, shipped_models
from viz_server_plugins.toolkit import set_predictions  # noqa: F401 - registers the "class_scores" work

PICTURES = 200  # four shards of 64: three whole, one of 8


@per_picture("tests:refuses_the_third_chunk")
def _refusing(model, chunk):
    if chunk.indices[0] >= 128:
        raise UserError("picture 129 cannot be read.")
    return np.zeros((len(chunk.indices), 1))


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    folder = tmp_path_factory.mktemp("set")
    shapes.write_image_set(folder, per_class=PICTURES // 4, seed=3, masks=True)
    settings = load_settings(data_dir=tmp_path_factory.mktemp("data"), shard_pictures=64)
    store = Store(settings)
    record, _inspection = store.add_model("shapes_planted", shipped_models()["shapes_planted"].read_bytes())
    images = store.add_images((name, data, "set", label, mask) for name, data, label, mask in pair_masks(read_image_set(folder)))
    return store, record, [image.id for image in images]


def stream_of(store, record, image_ids) -> PictureStream:
    images, labels, masks = stored_pictures(store, image_ids)
    return PictureStream(load_stored_model(store, record), images, labels, masks)


def shard_records(store, key) -> list[ShardRecord]:
    with store.db.session() as session:
        return list(session.query(ShardRecord).filter(ShardRecord.key == key).order_by(ShardRecord.start))


def test_split_rows_equal_one_process_and_are_shared_by_the_next_job(stored):
    store, record, ids = stored
    single = stream_of(store, record, ids).compute("class_scores", 0, len(ids))
    sent = []
    stream = stream_of(store, record, ids)
    stream.spread = shards.Spread(store, record.id, ids, sent.append)
    progress = []
    rows = stream.rows("class_scores", lambda done, total: progress.append((done, total)))
    assert rows.dtype == single.dtype and np.array_equal(rows, single)  # bit for bit
    records = shard_records(store, shards.work_key("class_scores", stream))
    assert [(r.start, r.stop, r.status) for r in records] == [(0, 64, "done"), (64, 128, "done"), (128, 192, "done"), (192, 200, "done")]
    assert sorted(sent) == [r.id for r in records] and progress[-1] == (200, 200)
    again, resent = stream_of(store, record, ids), []
    again.spread = shards.Spread(store, record.id, ids, resent.append)
    assert np.array_equal(again.rows("class_scores"), single) and not resent  # read, not computed again
    assert [r.attempts for r in shard_records(store, records[0].key)] == [1, 1, 1, 1]


def test_shards_a_worker_ran_merge_with_those_the_job_ran(stored):
    """A dispatcher whose worker runs every other shard as it is sent (the worker's own model and pictures)."""
    store, record, ids = stored
    subset = ids[::-1][:150]
    stream = stream_of(store, record, subset)
    single = stream.compute("class_scores", 0, len(subset))
    ran = []

    def worker(shard_id: int) -> None:
        if shard_id % 2:
            ran.append(shards.run_dispatched(store, shard_id))

    stream.spread = shards.Spread(store, record.id, subset, worker)
    assert np.array_equal(stream.rows("class_scores"), single)
    assert ran and set(ran) == {"done"}
    assert shards.run_dispatched(store, shard_records(store, shards.work_key("class_scores", stream))[0].id) == "skipped"  # done already


def test_a_shard_whose_process_died_is_taken_over(stored):
    store, record, ids = stored
    subset = ids[:130]
    stream = stream_of(store, record, subset)
    key = shards.work_key("class_scores", stream)
    slices = [(0, 64, subset[:64]), (64, 128, subset[64:128]), (128, 130, subset[128:])]
    opened, _ = store.db.open_shards(key, "class_scores", record.id, shards.basis(stream.model), slices)
    held = opened[1]
    assert store.db.claim_shard(held.id, 60, "a-worker-that-dies") == 1
    with store.db.session() as session:  # its lease lapsed long ago
        session.query(ShardRecord).filter(ShardRecord.id == held.id).update({"heartbeat_at": now() - timedelta(seconds=600)})
        session.commit()
    stream.spread = shards.Spread(store, record.id, subset)
    assert np.array_equal(stream.rows("class_scores"), stream.compute("class_scores", 0, len(subset)))
    taken = store.db.shards([held.id])[held.id]
    assert taken.status == "done" and taken.attempts == 2 and taken.runner != "a-worker-that-dies"


def test_a_live_holder_is_waited_for_not_run_twice(stored):
    store, record, ids = stored
    subset = ids[:100]
    stream = stream_of(store, record, subset)
    key = shards.work_key("class_scores", stream)
    opened, _ = store.db.open_shards(key, "class_scores", record.id, shards.basis(stream.model), [(0, 64, subset[:64]), (64, 100, subset[64:])])
    assert store.db.claim_shard(opened[0].id, 60, "a-busy-worker") == 1
    assert store.db.claim_shard(opened[0].id, 60, "another") is None  # its lease is alive
    waited = []

    def busy_worker_finishes() -> bool:  # what the job sees while it waits: the holder records its rows
        waited.append(1)
        if len(waited) == 3:
            shards.run_claimed(store, opened[0], 1, lambda: stream.compute("class_scores", 0, 64))
        return False

    stream.spread = shards.Spread(store, record.id, subset, is_cancelled=busy_worker_finishes)
    assert np.array_equal(stream.rows("class_scores"), stream.compute("class_scores", 0, 100))
    assert store.db.shards([opened[0].id])[opened[0].id].attempts == 1  # never claimed twice


def test_a_failing_shard_says_why_and_the_next_job_tries_it_again(stored):
    store, record, ids = stored
    stream = stream_of(store, record, ids)
    stream.spread = shards.Spread(store, record.id, ids)
    with pytest.raises(UserError, match="picture 129 cannot be read"):
        stream.rows("tests:refuses_the_third_chunk")
    records = shard_records(store, shards.work_key("tests:refuses_the_third_chunk", stream))
    assert [r.status for r in records[:3]] == ["done", "done", "failed"] and records[2].error == "picture 129 cannot be read."
    sent = []
    retry = shards.Spread(store, record.id, ids, sent.append)
    with pytest.raises(UserError, match="picture 129"):
        retry(stream, "tests:refuses_the_third_chunk")
    assert records[2].id in sent  # queued again for the next job, not failed forever


def test_a_shard_that_keeps_killing_its_process_is_failed_with_a_sentence(stored):
    store, record, ids = stored
    subset = ids[:70]
    stream = stream_of(store, record, subset)
    opened, _ = store.db.open_shards(
        shards.work_key("class_scores", stream), "class_scores", record.id, shards.basis(stream.model), [(0, 64, subset[:64]), (64, 70, subset[64:])]
    )
    with store.db.session() as session:
        session.query(ShardRecord).filter(ShardRecord.id == opened[0].id).update(
            {"status": JobStatus.RUNNING, "attempts": shards.MAX_ATTEMPTS, "heartbeat_at": now() - timedelta(seconds=600)}
        )
        session.commit()
    stream.spread = shards.Spread(store, record.id, subset)
    with pytest.raises(UserError, match="pictures 1-64 of the set stopped the process that ran them 3 times"):
        stream.rows("class_scores")
    assert store.db.shards([opened[0].id])[opened[0].id].status == "failed"


def test_a_cancelled_job_hands_its_shard_back(stored):
    store, record, ids = stored
    subset = ids[50:180]
    stream = stream_of(store, record, subset)
    calls = []
    # the second look comes after the first shard's chunk, while this job holds it
    stream.spread = shards.Spread(store, record.id, subset, is_cancelled=lambda: calls.append(1) or len(calls) >= 2)
    with pytest.raises(Cancelled):
        stream.rows("class_scores")
    records = shard_records(store, shards.work_key("class_scores", stream))
    assert [r.status for r in records] == ["queued", "queued", "queued"] and records[0].attempts == 1


def test_a_set_within_one_shard_runs_here_without_records(stored):
    store, record, ids = stored
    stream = stream_of(store, record, ids[:64])
    stream.spread = shards.Spread(store, record.id, ids[:64])
    assert np.array_equal(stream.rows("class_scores"), stream.compute("class_scores", 0, 64))
    assert not shard_records(store, shards.work_key("class_scores", stream))


def test_the_shard_size_is_a_whole_number_of_chunks(monkeypatch):
    monkeypatch.setenv("VIZ_SERVER_SHARD_PICTURES", "100")
    with pytest.raises(UserError, match="VIZ_SERVER_SHARD_PICTURES"):
        load_settings()
    monkeypatch.setenv("VIZ_SERVER_SHARD_PICTURES", "128")
    assert load_settings().shard_pictures == 128
