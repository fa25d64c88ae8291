"""Hook specifications of the ``viz_server`` pluggy project (entry-point group ``viz_server``).

A plugin is any module or object with functions marked ``@viz_server.hookimpl`` named like these.
"""

import pluggy

hookspec = pluggy.HookspecMarker("viz_server")


@hookspec
def register_techniques():
    """Return a list of ``viz_server.techniques.Technique`` instances this plugin provides."""
