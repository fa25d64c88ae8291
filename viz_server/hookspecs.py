"""Hook specifications of the ``viz_server`` pluggy project (entry-point group ``viz_server``).

A plugin is any module or object with functions marked ``@viz_server.hookimpl`` named like these. Every hook
is used by a built-in plugin registered exactly like a third-party one (see ``viz_server.plugins``), and
documented with a worked example in ``docs/plugins.md``. Hooks are grouped by the phase that calls them.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("viz_server")


# ---- model loading: guard -> normalize -> convert -> verify --------------------------------------------


@hookspec
def register_converters():
    """Return ``viz_server.model.convert.Converter`` instances: ONNX op versions converted to torch modules."""


@hookspec
def register_input_conventions():
    """Return ``viz_server.conventions.InputConvention`` instances: how a producer's exports expect their pictures."""


@hookspec
def model_checks(model):
    """Return sentences (findings) about a just-verified ``LoadedModel``; raise ``UserError`` to refuse it."""


# ---- model tasks: what the output means ---------------------------------------------------------------


@hookspec
def register_output_decoders():
    """Return ``viz_server.tasks.OutputDecoder`` instances: output layouts, and the model task each one means."""


# ---- analysis -------------------------------------------------------------------------------------------


@hookspec
def register_techniques():
    """Return ``viz_server.techniques.Technique`` instances this plugin provides."""


# ---- reporting ------------------------------------------------------------------------------------------


@hookspec
def register_artifact_renderers():
    """Return ``viz_server.artifacts.ArtifactRenderer`` instances: how an artifact kind shows in pages and exports."""


@hookspec
def report_sections(report):
    """Return ``viz_server.presentation.Section`` instances summarizing a report (a dict with its jobs and results)."""


# ---- command line ---------------------------------------------------------------------------------------


@hookspec
def register_commands(commands):
    """Add sub-commands to ``viz-server``: ``commands`` is argparse's sub-parsers object; set ``handler``."""
