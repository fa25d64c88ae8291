"""A report's jobs leave the queue longest-expected first, keep their order on the page, and never jump ahead of
jobs queued before them."""

from viz_server.config import load_settings
from viz_server.store import JobRecord, ModelRecord, ReportRecord, Store
from viz_server.web.actions import _queue_report


class Submitted:
    def __init__(self):
        self.ids = []

    def submit(self, job_id):
        self.ids.append(job_id)


def _job(model_id: int, technique: str, **values) -> JobRecord:
    return JobRecord(kind="technique", technique=technique, model_id=model_id, params={}, image_ids=[], **values)


def test_an_audit_starts_its_longest_technique_first(tmp_path):
    store = Store(load_settings(data_dir=tmp_path))
    model = store.db.add(ModelRecord(name="m", sha256="0" * 64))
    other = store.db.add(ModelRecord(name="n", sha256="1" * 64))
    history = [("slow", model.id, 12.0), ("slow", other.id, 1.0), ("quick", model.id, 0.5), ("middling", other.id, 3.0)]
    store.save_jobs([_job(model_id, technique, status="done", seconds=seconds) for technique, model_id, seconds in history])
    earlier = _job(other.id, "quick")  # another user's job, queued before the audit
    store.save_jobs([earlier])

    jobs = [_job(model.id, name) for name in ("quick", "middling", "slow")]
    dispatcher = Submitted()
    report = _queue_report(store, dispatcher, ReportRecord(kind="audit", title="audit"), jobs)

    by_name = {job.technique: job.id for job in store.jobs(report_id=report.id)}
    assert [job.technique for job in store.jobs(report_id=report.id)] == ["quick", "middling", "slow"]  # the page's order
    expected = [earlier.id, by_name["slow"], by_name["middling"], by_name["quick"]]
    assert store.db.queued_job_ids(10) == expected  # 12 s on this model (not 1 s elsewhere); 3 s on another model; 0.5 s
    assert dispatcher.ids == expected[1:]
    assert store.typical_seconds(["slow", "middling", "never_run"], model.id) == {"slow": 12.0, "middling": 3.0}


def test_before_a_technique_has_run_its_declared_cost_orders_the_queue(tmp_path):
    store = Store(load_settings(data_dir=tmp_path))
    model = store.db.add(ModelRecord(name="m", sha256="0" * 64))
    store.save_jobs([_job(model.id, "saliency", status="done", seconds=0.3)])  # one measured, the rest not: costs decide
    names = ("saliency", "embeddings", "attribution_ranking", "robustness_curve")
    report = _queue_report(store, Submitted(), ReportRecord(kind="audit", title="audit"), [_job(model.id, name) for name in names])
    by_id = {job.id: job.technique for job in store.jobs(report_id=report.id)}
    assert [by_id[job_id] for job_id in store.db.queued_job_ids(10)] == ["attribution_ranking", "robustness_curve", "embeddings", "saliency"]


def test_a_cancelled_spec_trial_leaves_a_working_model_ready(tmp_path):
    """Cancelling, failing or killing a trial of a changed spec keeps the working spec and the model ready; the same
    for an ordinary inspection leaves the model failed with the sentence."""
    from viz_server.store import ModelRecord, ModelStatus

    store = Store(load_settings(data_dir=tmp_path))
    record, first = store.add_model("m", b"not inspected here")
    store.db.update_model(record.id, status=ModelStatus.READY, description={"spec": {"task": "classification"}}, spec_overrides={"labels": "a,b"})
    trial = store.queue_inspection(record.id, spec_overrides={"labels": "x,y"})
    store.request_cancel(trial.id)
    after = store.db.get(ModelRecord, record.id)
    assert after.status == ModelStatus.READY and after.spec_overrides == {"labels": "a,b"} and after.error is None
    fresh, inspection = store.add_model("n", b"another")
    store.request_cancel(inspection.id)
    assert store.db.get(ModelRecord, fresh.id).status == ModelStatus.FAILED
