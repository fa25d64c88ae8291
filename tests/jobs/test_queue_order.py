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

    jobs = [_job(model.id, name) for name in ("quick", "never_run", "middling", "slow")]
    dispatcher = Submitted()
    report = _queue_report(store, dispatcher, ReportRecord(kind="audit", title="audit"), jobs)

    by_name = {job.technique: job.id for job in store.jobs(report_id=report.id)}
    assert [job.technique for job in store.jobs(report_id=report.id)] == ["quick", "never_run", "middling", "slow"]  # the page's order
    expected = [earlier.id, by_name["slow"], by_name["middling"], by_name["quick"], by_name["never_run"]]
    assert store.db.queued_job_ids(10) == expected  # 12 s on this model; 3 s elsewhere; 0.5 s; unknown last
    assert dispatcher.ids == expected[1:]
    assert store.typical_seconds(["slow", "middling", "never_run"], model.id) == {"slow": 12.0, "middling": 3.0}
