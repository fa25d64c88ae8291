"""The built-in report section (the ``report_sections`` hook): which parts of a report can be trusted.

For every class attribution in the report it lists the sanity check's verdict (Adebayo et al. 2018) and the
faithfulness areas; a method ranking's verdict and table are shown as they are; every robustness result with a sign of gradient masking is named; every job that failed
is named with its sentence. An auditor reads this before any picture.
"""

from __future__ import annotations

from statistics import mean

from viz_server import hookimpl
from viz_server.evidence import shown, shown_interval
from viz_server.presentation import Section


def _mean(values) -> str:
    numbers = [value for value in values or [] if isinstance(value, (int, float))]
    return f"{mean(numbers):.3f}" if numbers else "-"


def _shown(entry: dict) -> str:
    """A headline figure as the card prints it: the value with its 95% interval and count, then its qualifier (a
    figure that cannot be claimed says why)."""
    value = entry.get("value")
    note = entry.get("note") or ""
    if value is None:
        reason = note.removeprefix("cannot be claimed").lstrip(": ") or "no value"
        return f"cannot be claimed: {reason}" + (f" (n = {entry['count']})" if entry.get("count") is not None else "")
    if isinstance(value, float):
        bounds = (entry["low"], entry["high"]) if entry.get("low") is not None and entry.get("high") is not None else None
        text = shown(value, bounds, entry.get("count"))
    else:
        text = str(value) + (f" (n = {entry['count']})" if entry.get("count") is not None else "")
    return f"{text}. {note}" if note else text


def summary_card(report) -> Section | None:
    """The first screen of an audit: the model, its conversion, and every headline figure with where it came from."""
    headlines = report.get("headline") or {}
    if not report.get("models"):
        return None
    sentences, rows = [], [["model", "figure", "value", "better", "from"]]
    for model in report["models"]:
        conversion, spec = model.get("conversion") or {}, model.get("spec") or {}
        sentences.append(
            f"{model['name']} (sha256 {str(model.get('sha256'))[:12]}…, {conversion.get('producer') or 'unknown producer'}, opset "
            f"{conversion.get('opset', '?')}, task {spec.get('task', '?')})"
        )
        if spec.get("guessed"):
            sources = dict(spec.get("sources") or [])
            named = {"normalization": "mean"}
            guesses = [f"{field} ({sources.get(named.get(field, field), 'a guess')})" for field in spec["guessed"]]
            sentences.append(f"Guessed for {model['name']}, not stated by its file or by you: {'; '.join(guesses)}.")
        for key, entry in (headlines.get(model["name"]) or {}).items():
            rows.append([model["name"], entry.get("label") or key, _shown(entry), entry.get("better") or "", entry.get("technique") or "conversion"])
    failed = [job for job in report["jobs"] if job["status"] in ("failed", "cancelled")]
    if failed:
        sentences.append(f"{len(failed)} part{'s' if len(failed) != 1 else ''} of this report did not run; see below.")
    withheld = [row for row in rows[1:] if row[2].startswith("cannot")]
    guessed = any((model.get("spec") or {}).get("guessed") for model in report["models"])
    return Section("Summary", sentences=sentences, rows=rows, level="warning" if failed or withheld or guessed else "info")


def dataset_findings(report) -> list[Section]:
    """What the labeled set says about the model, right after the summary card: each done job of a technique in
    the ``dataset`` suite, its verdict sentences and its figures (per-class table, confusion matrix, reliability
    diagram, the shortcut scan's table and mean maps with exemplars), whichever plugin made them."""
    from viz_server.installed import suite, techniques

    found = []
    dataset = set(suite("dataset"))
    for job in report["jobs"]:
        result = job.get("result") or {}
        if job["status"] != "done" or job.get("technique") not in dataset:
            continue
        verdict = (result.get("metrics") or {}).get("verdict") or []
        found.append(
            Section(
                f"{techniques()[job['technique']].title} on {job['model']['name']}",
                sentences=[verdict] if isinstance(verdict, str) else list(verdict),
                figures=[(job["id"], artifact["name"]) for artifact in result.get("artifacts", [])],
            )
        )
    return sorted(found, key=lambda section: section.title)  # the same order in every report, whatever ran first


@hookimpl(tryfirst=True)  # the summary card leads the report, before any other plugin's sections
def report_sections(report):
    card = summary_card(report)
    sections = [card] if card else []
    failed = [job for job in report["jobs"] if job["status"] in ("failed", "cancelled")]
    if failed:
        sections.append(
            Section(
                "Parts that did not run",
                level="warning",
                sentences=[
                    f"{job['technique'] or 'inspection'} on {job['model']['name']}: {job['status']}" + (f" ({job['error']})" if job.get("error") else ".")
                    for job in failed
                ],
            )
        )
    sections.extend(dataset_findings(report))
    rows = [["technique", "model", "sanity check", "deletion AUC (lower is better)", "insertion AUC (higher is better)"]]
    for job in report["jobs"]:
        metrics = (job.get("result") or {}).get("metrics") or {}
        check = metrics.get("sanity_check")
        if job["status"] != "done" or not isinstance(check, dict):
            continue
        verdict = "passed" if check.get("passed") else "cannot judge" if check.get("passed") is None else "FAILED"
        verdict += " (on the 1 picture checked)"  # a job's own check is on its first picture: a verdict on that map, not the method
        rows.append([job["technique"], job["model"]["name"], verdict, _mean(metrics.get("deletion_auc")), _mean(metrics.get("insertion_auc"))])
    masked = []
    for job in report["jobs"]:
        findings = ((job.get("result") or {}).get("metrics") or {}).get("masking_findings")
        if job["status"] != "done" or findings is None:
            continue
        groups = findings.values() if isinstance(findings, dict) else [findings]
        if any(groups):
            masked.append(f"{job['technique']} on {job['model']['name']}: robustness cannot be claimed ({next(f for f in groups if f)[0]})")
    if masked:
        sections.append(Section("Robustness results that cannot be trusted", sentences=masked, level="warning"))
    for job in report["jobs"]:
        metrics = (job.get("result") or {}).get("metrics") or {}
        if job["status"] != "done" or not isinstance(metrics.get("ranking"), list) or not metrics.get("verdict"):
            continue
        table = [["method", "sanity check", "ROAD gap (higher is more faithful; 95% CI, pictures)", "energy on object / area"]]
        for entry in metrics["ranking"]:
            sanity = {"baseline": "model-free", "reference": "reference"}.get(entry.get("role"), entry.get("sanity_check"))
            gap = _mean([entry.get("road_gap")])
            if entry.get("road_gap_low") is not None and entry.get("road_gap_high") is not None:
                gap += f" ({shown_interval(entry['road_gap_low'], entry['road_gap_high'])}, n = {entry.get('road_gap_count')})"
            table.append([entry.get("method"), sanity, gap, _mean([entry.get("energy_ratio")])])
        recommended = metrics.get("recommended")
        sections.append(
            Section(
                f"Which explanation to believe on {job['model']['name']}",
                sentences=list(metrics["verdict"]),
                rows=table,
                level="info" if recommended else "warning",
            )
        )
    if len(rows) > 1:
        failing = [row[0] for row in rows[1:] if not row[2].startswith("passed")]
        sentences = (
            ["Maps that fail the sanity check show the image rather than what the model learned; do not act on them."]
            if failing
            else ["Every attribution in this report passed the model-parameter randomization test."]
        )
        sections.append(Section("Which explanations to trust", sentences=sentences, rows=rows, level="warning" if failing else "info"))
    return sections
