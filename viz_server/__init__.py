"""viz-server: what has this image network learned, where is it looking, and how easily is it fooled?"""

import pluggy

from viz_server.version import __version__

hookimpl = pluggy.HookimplMarker("viz_server")
"""Marker for plugin hook implementations: ``from viz_server import hookimpl``."""


def load_model(source, **kwargs):
    """Load any exported ONNX image model; see ``viz_server.model.pipeline.load_model``."""
    from viz_server.model.pipeline import load_model as _load_model

    return _load_model(source, **kwargs)


__all__ = ["__version__", "hookimpl", "load_model"]
