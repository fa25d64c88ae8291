"""The built-in report section (the ``report_sections`` hook): which parts of a report can be trusted.

For every class attribution in the report it lists the sanity check's verdict (Adebayo et al. 2018) and the
faithfulness areas; a method ranking's verdict and table are shown as they are; every robustness result with a sign of gradient masking is named; every job that failed
is named with its sentence. An auditor reads this before any picture.
"""

from __future__ import annotations

from statistics import mean

from viz_server import hookimpl
from viz_server.presentation import Section


def _mean(values) -> str:
    numbers = [value for value in values or [] if isinstance(value, (int, float))]
    return f"{mean(numbers):.3f}" if numbers else "-"


@hookimpl
def report_sections(report):
    sections = []
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
    rows = [["technique", "model", "sanity check", "deletion AUC (lower is better)", "insertion AUC (higher is better)"]]
    for job in report["jobs"]:
        metrics = (job.get("result") or {}).get("metrics") or {}
        check = metrics.get("sanity_check")
        if job["status"] != "done" or not isinstance(check, dict):
            continue
        verdict = "passed" if check.get("passed") else "cannot judge" if check.get("passed") is None else "FAILED"
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
        table = [["method", "sanity check", "ROAD gap (higher is more faithful)", "energy on object / area"]]
        for entry in metrics["ranking"]:
            sanity = {"baseline": "model-free", "reference": "reference"}.get(entry.get("role"), entry.get("sanity_check"))
            table.append([entry.get("method"), sanity, _mean([entry.get("road_gap")]), _mean([entry.get("energy_ratio")])])
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
        failing = [row[0] for row in rows[1:] if row[2] != "passed"]
        sentences = (
            ["Maps that fail the sanity check show the image rather than what the model learned; do not act on them."]
            if failing
            else ["Every attribution in this report passed the model-parameter randomization test."]
        )
        sections.append(Section("Which explanations to trust", sentences=sentences, rows=rows, level="warning" if failing else "info"))
    return sections
