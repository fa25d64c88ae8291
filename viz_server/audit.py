"""An audit without a server, for pipelines: the web's audit (the same jobs, report, sections and exports) run in
this process against a throw-away data folder, and the gates a CI job needs (``--fail-under KEY=VALUE``).

Data flows one way: the model and pictures are stored as an upload would store them, the model is inspected by
the same job, the audit's jobs are chosen and checked by the same action, each job runs in this process, and
the report is exported by the same code as ``/reports/N/export.html`` and ``.json``.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from viz_server.errors import UserError


@dataclass
class Gate:
    """One threshold on a headline figure: ``under`` fails when the figure is below ``limit`` (``--fail-under``),
    otherwise when it is above (``--fail-over``). ``part`` is ``value`` (the figure), or ``low``/``high`` (the bounds of
    its 95% interval: ``--fail-under accuracy.low=0.9`` holds only when the data rule out an accuracy below 0.9)."""

    key: str
    limit: float
    under: bool
    part: str = "value"

    @classmethod
    def parse(cls, text: str, under: bool) -> Gate:
        key, _, value = text.partition("=")
        flag = f"--fail-{'under' if under else 'over'}"
        try:
            limit = float(value)
        except ValueError:
            raise UserError(f"{flag} {text[:60]!r} must look like KEY=NUMBER or KEY.low=NUMBER, e.g. accuracy=0.9.") from None
        figure, _, part = key.strip().partition(".")
        if not figure or limit != limit or part not in ("", "value", "low", "high"):
            raise UserError(f"{flag} {text[:60]!r} must look like KEY=NUMBER or KEY.low=NUMBER (or .high), e.g. accuracy.low=0.9.")
        return cls(figure, limit, under, part or "value")

    def failure(self, figures: dict[str, dict[str, Any]]) -> str | None:
        """None when the gate holds; else one sentence. A figure (or bound) that could not be claimed fails the gate."""
        entry = figures.get(self.key)
        named = self.key if self.part == "value" else f"{self.key}.{self.part}"
        if entry is None:
            known = ", ".join(sorted(figures)) or "none"
            return f"{self.key} was not measured by this audit (figures measured: {known})."
        value = entry.get(self.part)
        if not isinstance(value, (int, float)) or isinstance(value, bool) or value != value or value in (float("inf"), float("-inf")):
            why = entry.get("note") or ("no interval: too few pictures to bound it" if self.part != "value" else "no value")
            return f"{named} cannot be claimed: {why}."
        if (value < self.limit) if self.under else (value > self.limit):
            count = f" (n = {entry['count']})" if entry.get("count") is not None else ""
            return f"{named} = {value:g} is {'below' if self.under else 'above'} the threshold {self.limit:g}{count}."
        return None


def shown_figure(entry: dict[str, Any]) -> str:
    """A headline figure on one line: value, 95% interval and count, and its qualifier."""
    value = entry.get("value")
    if value is None:
        return f"cannot be claimed ({entry.get('note') or 'no value'})"
    text = f"{value:.4g}" if isinstance(value, float) else str(value)
    if entry.get("low") is not None and entry.get("high") is not None:
        text += f" (95% CI {entry['low']:.4g}-{entry['high']:.4g}"
        text += f", n = {entry['count']})" if entry.get("count") is not None else ")"
    elif entry.get("count") is not None:
        text += f" (n = {entry['count']})"
    return f"{text}: {entry['note']}" if entry.get("note") else text


class _InlineDispatcher:
    """Collects the jobs an action queues; the audit then runs them here, one after another."""

    def __init__(self):
        self.queued: list[int] = []

    def submit(self, job_id: int) -> None:
        self.queued.append(job_id)


def run_audit(
    model_path: str,
    spec_overrides: dict[str, Any],
    pictures: list[tuple[str, bytes, str | None, bytes | None]],
    choose: Callable[[str, str], list[str]],
    on_job: Callable[[int, int, str, str, float], None] = lambda *_: None,
    second_image: tuple[str, bytes] | None = None,
) -> tuple[dict[str, Any], str]:
    """Audit the model with the techniques ``choose(task, forward_only)`` names (``forward_only``: why the model runs
    on onnxruntime only, or "") on ``pictures`` (name, bytes, label, mask), and
    ``second_image`` (name, bytes) where a target compares with one (embedding models); return the report as JSON
    data and as one self-contained HTML page. ``on_job(done, total, technique, status, seconds)`` reports progress."""
    from viz_server.config import load_settings
    from viz_server.jobs.execute import execute_job
    from viz_server.store import JobRecord, JobStatus, ModelRecord
    from viz_server.web import actions, create_app, export

    data = Path(model_path).read_bytes()
    with tempfile.TemporaryDirectory(prefix="viz-audit-") as folder:
        settings = load_settings(data_dir=Path(folder), database_url=f"sqlite:///{Path(folder) / 'viz.db'}", broker_url=None, token=None)
        app = create_app(settings, start_jobs=False)
        store = app.extensions["viz_store"]
        with app.test_request_context():
            record, inspection = actions.upload_model(store, Path(model_path).stem, data, spec_overrides)
            _run(store, inspection.id, execute_job)
            inspected = store.db.get(JobRecord, inspection.id)
            if inspected.status != JobStatus.DONE:
                raise UserError(f"{record.name} cannot be audited: {inspected.error}")
            description = store.db.get(ModelRecord, record.id).description or {}
            task = description.get("spec", {}).get("task") or "classification"
            technique_names = choose(task, description.get("conversion", {}).get("forward_only", ""))
            images = store.add_images((name, content, "audit", label, mask) for name, content, label, mask in pictures) if pictures else []
            second = store.add_images([(second_image[0], second_image[1], "second", None, None)])[0].id if second_image else None
            dispatcher = _InlineDispatcher()
            report = actions.start_audit(store, dispatcher, record.id, technique_names, [image.id for image in images], second)
            for done, job_id in enumerate(dispatcher.queued, start=1):
                started = time.perf_counter()
                _run(store, job_id, execute_job)
                job = store.db.get(JobRecord, job_id)
                on_job(done, len(dispatcher.queued), job.technique or "", job.status, time.perf_counter() - started)
            report_data = export.report_json(store, report)
            html = export.render_html(store, report.title, store.jobs(report_id=report.id), report_data["sections"], "audit")
        store.db.engine.dispose()
    return report_data, html


def _run(store, job_id: int, execute_job) -> None:
    if store.db.claim_job(job_id):
        execute_job(store, job_id)


def audit_techniques(task: str, suites: list[str], extra: list[str], forward_only: str = "") -> list[str]:
    """The techniques of ``suites`` that apply to ``task`` (and to a model run forward-only, when ``forward_only``
    says why it is) and take no second image, plus ``extra`` by name."""
    from viz_server.installed import check_applies, get_technique, suite, techniques
    from viz_server.techniques import SUITES

    for name in suites:
        if name not in SUITES:
            raise UserError(f"no audit suite named {name!r}; the suites are {', '.join(SUITES)}.")
    chosen = [name for suite_name in suites for name in suite(suite_name) if techniques()[name].applies(task, bool(forward_only))]
    for name in extra:
        check_applies(get_technique(name), task, "this model", forward_only)
        chosen.append(name)
    return list(dict.fromkeys(chosen))
