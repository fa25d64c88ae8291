"""What a job reads from the store: its model (kept warm between jobs, ``model_memory``) and its pictures (read
on access, so a job over a whole set holds one chunk's bytes at a time)."""

from __future__ import annotations

from viz_server.picture_stream import Deferred
from viz_server.store import ModelRecord, Store
from viz_server.store.database import ImageRecord


def load_stored_model(store: Store, record: ModelRecord, overrides: dict | None = None):
    """The stored model, loaded with its spec (or ``overrides``), or kept from this process's previous job on it
    (see ``model_memory``)."""
    from viz_server.jobs import model_memory
    from viz_server.model.pipeline import load_model

    overrides = (record.spec_overrides or {}) if overrides is None else overrides
    return model_memory.recall(record.sha256, record.name, overrides, lambda: load_model(store.blobs.read(record.sha256), name=record.name, **overrides))


def stored_pictures(store: Store, image_ids: list[int]) -> tuple[Deferred, list[str | None], Deferred]:
    """The pictures with these ids as (name, bytes) read on access, their labels, and their object masks (bytes
    read on access, None where a picture has none); one sentence for an id that no longer exists."""
    records = [store.db.require(ImageRecord, image_id, "image") for image_id in image_ids]
    images = Deferred(
        [True] * len(records),
        lambda index: (records[index].name, store.blobs.read(records[index].sha256)),
        [record.name for record in records],
        [record.sha256 for record in records],
    )
    masks = Deferred([bool(record.mask_sha256) for record in records], lambda index: store.blobs.read(records[index].mask_sha256))
    return images, [record.label for record in records], masks
