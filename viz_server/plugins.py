"""The plugin manager: built-in technique plugins and installed ones, registered the same way.

Built-ins are listed once in ``DEFAULT_PLUGINS`` and registered with ``pm.register`` exactly as
third-party plugins are when setuptools entry points (group ``viz_server``) load them.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

import pluggy

import viz_server
from viz_server import hookspecs
from viz_server.errors import UserError
from viz_server.techniques import Technique, check_technique

DEFAULT_PLUGINS = (
    "viz_server_plugins.saliency",
    "viz_server_plugins.guided_backprop",
    "viz_server_plugins.deconvnet",
    "viz_server_plugins.gradcam",
    "viz_server_plugins.guided_gradcam",
    "viz_server_plugins.neuron_gradient",
    "viz_server_plugins.layer_view",
    "viz_server_plugins.weights",
    "viz_server_plugins.activation_maps",
    "viz_server_plugins.class_visualization",
    "viz_server_plugins.neuron_visualization",
    "viz_server_plugins.feature_inversion",
    "viz_server_plugins.embeddings",
    "viz_server_plugins.adversarial",
    "viz_server_plugins.fooling_image",
    "viz_server_plugins.robustness_curve",
    "viz_server_plugins.shape_bias",
    "viz_server_plugins.corruptions",
    "viz_server_plugins.defences",
    "viz_server_plugins.style_transfer",
)

_lock = threading.Lock()
_manager: pluggy.PluginManager | None = None


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once, on first use)."""
    global _manager
    with _lock:
        if _manager is None:
            manager = pluggy.PluginManager("viz_server")
            manager.add_hookspecs(hookspecs)
            for module_name in DEFAULT_PLUGINS:
                manager.register(importlib.import_module(module_name), name=module_name)
            manager.load_setuptools_entrypoints("viz_server")
            _manager = manager
        return _manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next call rediscovers plugins (tests install plugins at run time)."""
    global _manager
    with _lock:
        _manager = None


def _techniques_by_plugin(manager: pluggy.PluginManager) -> list[tuple[Any, list[Technique]]]:
    found = []
    for plugin in manager.get_plugins():
        implementation = getattr(plugin, "register_techniques", None)
        if implementation is None:
            continue
        techniques = list(implementation() or [])
        found.append((plugin, techniques))
    return found


def techniques() -> dict[str, Technique]:
    """Every valid technique by name; a plugin that breaks the contract is reported, not loaded."""
    manager = plugin_manager()
    result: dict[str, Technique] = {}
    for techniques_list in manager.hook.register_techniques():
        for technique in techniques_list or []:
            if isinstance(technique, Technique) and not check_technique(technique):
                result.setdefault(technique.name, technique)
    return result


def get_technique(name: str) -> Technique:
    available = techniques()
    if name not in available:
        raise UserError(f"no technique named '{name}'; installed: {', '.join(sorted(available)) or 'none'}.")
    return available[name]


def describe_plugins() -> list[dict[str, Any]]:
    """Installed plugins with their source, version and techniques (what `viz-server plugins` lists)."""
    manager = plugin_manager()
    distributions = {id(plugin): dist for plugin, dist in manager.list_plugin_distinfo()}
    described = []
    for plugin, technique_list in _techniques_by_plugin(manager):
        dist = distributions.get(id(plugin))
        name = manager.get_name(plugin)
        problems = {
            getattr(t, "name", repr(t)): check_technique(t) if isinstance(t, Technique) else ["not a Technique instance"]
            for t in technique_list
        }
        described.append(
            {
                "name": name,
                "source": "built-in" if name in DEFAULT_PLUGINS else (f"{dist.project_name}" if dist else "registered"),
                "version": viz_server.__version__ if name in DEFAULT_PLUGINS else (dist.version if dist else ""),
                "techniques": [t.describe() for t in technique_list if isinstance(t, Technique) and not problems[t.name]],
                "problems": {key: value for key, value in problems.items() if value},
            }
        )
    return described
