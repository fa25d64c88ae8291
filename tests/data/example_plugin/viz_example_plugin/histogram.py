"""A new artifact kind, ``histogram`` (rows: from, to, count), drawn as an inline SVG bar chart."""

from markupsafe import escape

from viz_server import hookimpl
from viz_server.presentation import ArtifactRenderer


class Histogram(ArtifactRenderer):
    kind = "histogram"
    media_type = None  # rows only, no bytes

    def html(self, artifact, links):
        counts = [int(row[2]) for row in artifact["rows"][1:]]
        tallest = max(counts, default=0) or 1
        bars = "".join(f'<rect x="{i * 12}" y="{60 - 60 * c / tallest:.1f}" width="10" height="{60 * c / tallest:.1f}" fill="#3a4fd1"/>'
                       for i, c in enumerate(counts))
        caption = escape(artifact["caption"])
        return (f'<figure class="histogram"><svg width="{12 * len(counts)}" height="60" role="img" aria-label="{caption}">{bars}</svg>'
                f"<figcaption>{caption}</figcaption></figure>")


@hookimpl
def register_artifact_renderers():
    return [Histogram()]
