"""How results are presented: artifact renderers and report sections (the reporting hooks' contracts).

- ``ArtifactRenderer``: how one artifact kind (``Artifact.kind``) shows in the web pages and in the
  self-contained HTML export, and what media type its bytes have. Renderers come from the
  ``register_artifact_renderers`` hook; the built-in kinds (image, plot, table, points) are a plugin too.
- ``Section``: a summary a plugin contributes to a report (the ``report_sections`` hook), shown at the top of
  the report page and in both exports.

Everything a renderer or section puts into HTML comes from plugins and models, so it must be escaped:
``escape`` (markupsafe's) is the one to use.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from markupsafe import Markup, escape

from viz_server.plugins import collected

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ArtifactLinks:
    """Where an artifact's pieces live, for its renderer.

    In a page: URLs. In a self-contained export (``inline``): ``src`` is a data: URI and there is nothing to
    link to (``download``, ``array`` and thumbnails are None)."""

    src: str | None  # the artifact's bytes (URL or data: URI), None when it has none
    download: str | None = None  # the bytes as a download
    array: str | None = None  # the raw array behind the artifact (.npy)
    inline: bool = False
    thumbnail: Callable[[int], str | None] = lambda index: None  # an input image's thumbnail, by image index


class ArtifactRenderer(ABC):
    """Shows one artifact kind. ``media_type`` is the type of ``Artifact.data`` (None when the kind carries
    rows only); ``html`` returns safe HTML for one artifact (a dict: name, caption, kind, array, group, rows)."""

    kind: ClassVar[str]
    media_type: ClassVar[str | None] = None

    @abstractmethod
    def html(self, artifact: dict[str, Any], links: ArtifactLinks) -> str:
        """Safe HTML for the artifact (escape every value that comes from the artifact)."""

    def problems(self, artifact: dict[str, Any]) -> list[str]:
        """What is wrong with an artifact of this kind (the contract test asks): by default, a kind without bytes
        needs rows, each a list."""
        rows = artifact.get("rows")
        if self.media_type is None and not (rows and all(isinstance(row, list) for row in rows)):
            return [f"a {self.kind} artifact needs rows (lists of values, the first the header)"]
        return []


def artifact_renderers() -> dict[str, ArtifactRenderer]:
    """Kind -> renderer; for a kind several plugins render, the one pluggy calls first wins (the last registered,
    or a ``tryfirst`` implementation)."""
    renderers: dict[str, ArtifactRenderer] = {}
    for _plugin, renderer in collected("register_artifact_renderers", ArtifactRenderer):
        renderers.setdefault(renderer.kind, renderer)
    return renderers


def render_artifact(artifact: dict[str, Any], links: ArtifactLinks) -> Markup:
    """The artifact as HTML, or one plain sentence when no renderer knows its kind or the renderer fails."""
    renderer = artifact_renderers().get(str(artifact.get("kind")))
    caption = escape(artifact.get("caption", ""))
    if renderer is None:
        return Markup(f'<p class="unrendered">{caption}: no installed plugin shows artifacts of kind {escape(artifact.get("kind"))!s}.</p>')
    try:
        return Markup(renderer.html(artifact, links))
    except Exception as exc:  # noqa: BLE001 - one plugin's bug must not break the page
        log.warning("artifact renderer for %s failed: %s", renderer.kind, exc)
        return Markup(f'<p class="unrendered">{caption}: the {escape(renderer.kind)} renderer failed ({escape(type(exc).__name__)}).</p>')


def media_type(kind: str) -> str:
    """The media type of an artifact kind's bytes (PNG unless its renderer says otherwise)."""
    renderer = artifact_renderers().get(kind)
    return (renderer.media_type if renderer is not None else None) or "image/png"


@dataclass
class Section:
    """A report summary: a title, plain sentences, optionally a table (first row = header) and figures: artifacts
    of the report's jobs shown with it, as (job id, artifact name) pairs.

    ``level`` is ``info`` or ``warning`` (shown in red: something the reviewer must not miss)."""

    title: str
    sentences: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    level: str = "info"
    figures: list[tuple[int, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "sentences": self.sentences,
            "rows": self.rows,
            "level": self.level,
            "figures": [{"job": job, "artifact": name} for job, name in self.figures],
        }


def report_headlines(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The headline figures of a report, per model name: the conversion's parity from the model, then every done
    job's ``metrics["headline"]`` (see ``viz_server.techniques.headline``), each with the technique it came from."""
    figures: dict[str, dict[str, Any]] = {}
    for model in report.get("models", []):
        conversion = model.get("conversion") or {}
        forward_only = conversion.get("forward_only")
        figures.setdefault(model["name"], {})["parity"] = {
            "value": None if forward_only else conversion.get("worst_rel_error"),
            "label": "worst relative difference from onnxruntime (the largest over its probes, not an estimate)",
            "better": "lower",
            "note": f"no torch graph: the model runs forward-only on onnxruntime ({forward_only})" if forward_only else "",
            "count": len(conversion.get("parity") or []) or None,
            "low": None,
            "high": None,
            "technique": None,
        }
    for job in report.get("jobs", []):
        metrics = (job.get("result") or {}).get("metrics") or {}
        if job.get("status") != "done" or not isinstance(metrics.get("headline"), dict):
            continue
        for key, entry in metrics["headline"].items():
            if isinstance(entry, dict) and "value" in entry:
                figures.setdefault(job["model"]["name"], {})[str(key)] = {**entry, "technique": job.get("technique")}
    return figures


def report_sections(report: dict[str, Any]) -> list[Section]:
    """Every plugin's sections for a report (a dict with ``kind``, ``title`` and ``jobs`` with their results)."""
    return [section for _plugin, section in collected("report_sections", Section, report=report)]
