"""The built-in artifact renderers (the ``register_artifact_renderers`` hook): how pictures, plots, tables and
scatter plots show in the web pages and in the self-contained HTML export.

A plugin adds a kind (or replaces one of these) the same way. Every value that comes from an artifact is
escaped.
"""

from __future__ import annotations

from markupsafe import escape

from viz_server import hookimpl
from viz_server.presentation import ArtifactLinks, ArtifactRenderer


def _downloads(links: ArtifactLinks, data_name: str, array_name: str) -> str:
    if links.inline:
        return ""
    parts = [f'<a href="{escape(links.download)}">{data_name}</a>'] if links.download else []
    if links.array:
        parts.append(f'<a href="{escape(links.array)}">{array_name}</a>')
    return "<br>" + " · ".join(parts) if parts else ""


class Picture(ArtifactRenderer):
    """A PNG picture (``image``: a map or an input; ``plot``: a chart)."""

    media_type = "image/png"

    def __init__(self, kind: str):
        self.kind = kind

    def html(self, artifact, links):
        caption = escape(artifact.get("caption", ""))
        return (
            f'<figure><img class="{escape(self.kind)}" src="{escape(links.src or "")}" alt="{caption}">{_colour_bar(artifact.get("scale"))}'
            f"<figcaption>{caption}{_downloads(links, 'PNG', 'array (.npy)')}</figcaption></figure>"
        )


def _colour_bar(scale) -> str:
    """The colour map with the values its ends stand for (brighter = larger; values above the top are clipped)."""
    if not (isinstance(scale, (list, tuple)) and len(scale) == 2 and all(isinstance(v, (int, float)) for v in scale)):
        return ""
    low, high = (f"{float(v):.3g}" for v in scale)
    return f'<div class="colorbar" title="colour scale: {low} to {high} (99.5th percentile; higher values clipped)"><span>{low}</span><i></i><span>≥ {high}</span></div>'


class Table(ArtifactRenderer):
    """Rows of values; the first row is the header."""

    kind = "table"

    def html(self, artifact, links):
        rows = artifact.get("rows") or []
        head = "".join(f"<th>{escape(cell)}</th>" for cell in rows[0]) if rows else ""
        body = "".join("<tr>" + "".join(f"<td>{escape(cell)}</td>" for cell in row) + "</tr>" for row in rows[1:])
        return f'<table class="data"><caption>{escape(artifact.get("caption", ""))}</caption><tr>{head}</tr>{body}</table>'


PALETTE = ("#3a4fd1", "#e0a100", "#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#a6761d", "#666666", "#1f78b4")
SIZE, MARGIN, THUMB = 340, 12, 64


class Points(ArtifactRenderer):
    """A 2-D scatter (rows: x, y, label, image index) as SVG, with each input's thumbnail on hover."""

    kind = "points"

    def problems(self, artifact):
        rows = artifact.get("rows") or [[]]
        return super().problems(artifact) or ([] if rows[0][:4] == ["x", "y", "label", "image"] else ["a points artifact's header must be x, y, label, image"])

    def html(self, artifact, links):
        body = [row for row in (artifact.get("rows") or [])[1:] if len(row) >= 4]
        caption = escape(artifact.get("caption", ""))
        if not body:
            return f"<p>{caption}: no points.</p>"
        xs, ys = [float(row[0]) for row in body], [float(row[1]) for row in body]
        span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
        labels = sorted({str(row[2]) for row in body})
        inner = SIZE - 2 * MARGIN
        marks = []
        for x, y, row in zip(xs, ys, body):
            cx = MARGIN + (x - min(xs)) / span_x * inner
            cy = MARGIN + (1 - (y - min(ys)) / span_y) * inner
            colour = PALETTE[labels.index(str(row[2])) % len(PALETTE)]
            thumb = None if links.inline else links.thumbnail(int(row[3]))
            picture = ""
            if thumb:
                tx, ty = min(cx + 6, SIZE - THUMB), min(max(cy - THUMB / 2, 0), SIZE - THUMB)
                picture = f'<image href="{escape(thumb)}" x="{tx:.1f}" y="{ty:.1f}" width="{THUMB}" height="{THUMB}"/>'
            marks.append(f'<g class="pt"><circle cx="{cx:.1f}" cy="{cy:.1f}" r="4" fill="{colour}"><title>{escape(row[2])}</title></circle>{picture}</g>')
        svg = (
            f'<svg class="points" viewBox="0 0 {SIZE} {SIZE}" width="{SIZE}" height="{SIZE}" role="img" aria-label="{caption}">'
            f'<rect x="0" y="0" width="{SIZE}" height="{SIZE}" fill="#ffffff" stroke="#d9dde6"/>{"".join(marks)}</svg>'
        )
        return f"<figure>{svg}<figcaption>{caption}{_downloads(links, '', 'coordinates (.npy)')}</figcaption></figure>"


@hookimpl
def register_artifact_renderers():
    return [Picture("image"), Picture("plot"), Table(), Points()]
