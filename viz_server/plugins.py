"""The plugin manager: built-in plugins and installed ones, registered the same way.

Built-ins are listed once in ``DEFAULT_PLUGINS`` and registered with ``pm.register`` exactly as third-party
plugins are when their ``viz_server`` entry points load (Datasette's ``DEFAULT_PLUGINS``, pytest's
``default_plugins``). A plugin module may name more plugin modules in a ``PLUGINS`` tuple (like pytest's
``pytest_plugins``): the built-in package ``viz_server_plugins`` lists its modules that way, and a
third-party package with several plugins can do the same.

Every hook is called one implementation at a time: a plugin that fails to import or whose hook raises is
reported (``problems()``, ``viz-server plugins``, the plugins page) and skipped, never allowed to break a
page or a command.
"""

from __future__ import annotations

import importlib
import logging
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import pluggy

import viz_server
from viz_server import hookspecs
from viz_server.errors import UserError
from viz_server.techniques import Technique, check_technique

DEFAULT_PLUGINS = ("viz_server_plugins", "viz_server_models")
"""The built-in plugins (packages may list more modules in ``PLUGINS``)."""

ENTRY_POINT_GROUP = "viz_server"

log = logging.getLogger(__name__)


@dataclass
class _Registry:
    manager: pluggy.PluginManager
    builtin: set[str]
    distributions: dict[str, tuple[str, str]]  # plugin name -> (project, version)
    problems: dict[str, list[str]]  # plugin name -> sentences


_lock = threading.RLock()
_registry: _Registry | None = None


def _registry_now() -> _Registry:
    global _registry
    with _lock:
        if _registry is None:
            manager = pluggy.PluginManager("viz_server")
            manager.add_hookspecs(hookspecs)
            registry = _Registry(manager, set(), {}, {})
            for module_name in DEFAULT_PLUGINS:
                _register_module(registry, module_name, builtin=True)
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                _register_entry_point(registry, entry_point)
            _registry = registry
        return _registry


def _register_module(registry: _Registry, module_name: str, builtin: bool, distribution: tuple[str, str] | None = None) -> None:
    if registry.manager.has_plugin(module_name):
        return
    try:
        module = importlib.import_module(module_name)
        registry.manager.register(module, name=module_name)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
        _report(registry, module_name, f"could not be loaded ({type(exc).__name__}: {exc})")
        return
    if builtin:
        registry.builtin.add(module_name)
    if distribution:
        registry.distributions[module_name] = distribution
    for child in getattr(module, "PLUGINS", ()):
        _register_module(registry, child, builtin, distribution)


def _register_entry_point(registry: _Registry, entry_point: metadata.EntryPoint) -> None:
    dist = entry_point.dist
    distribution = (dist.metadata["Name"], dist.version) if dist is not None else None
    if registry.manager.has_plugin(entry_point.name) or registry.manager.is_blocked(entry_point.name):
        return
    try:
        plugin = entry_point.load()
        registry.manager.register(plugin, name=entry_point.name)
    except Exception as exc:  # noqa: BLE001 - a broken plugin is reported, never fatal
        _report(registry, entry_point.name, f"could not be loaded ({type(exc).__name__}: {exc})")
        return
    if distribution:
        registry.distributions[entry_point.name] = distribution
    for child in getattr(plugin, "PLUGINS", ()):
        _register_module(registry, child, builtin=False, distribution=distribution)


def _report(registry: _Registry, plugin_name: str, sentence: str) -> None:
    log.warning("viz-server plugin %s %s", plugin_name, sentence)
    found = registry.problems.setdefault(plugin_name, [])
    if sentence not in found:
        found.append(sentence)


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager (built once, on first use)."""
    return _registry_now().manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next call rediscovers plugins (tests install plugins at run time)."""
    global _registry
    with _lock:
        _registry = None


def call_hook(hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """(plugin name, result) of every implementation of a hook, in registration order (built-ins first).

    An implementation that raises is reported under its plugin and skipped; ``UserError`` passes through, since
    a hook raises it on purpose (a model check refusing a model)."""
    registry = _registry_now()
    results = []
    for implementation in getattr(registry.manager.hook, hook_name).get_hookimpls():
        try:
            results.append((implementation.plugin_name, implementation.function(**kwargs)))
        except UserError:
            raise
        except Exception as exc:  # noqa: BLE001 - one plugin's bug must not break every page
            _report(registry, implementation.plugin_name, f"failed in {hook_name} ({type(exc).__name__}: {exc})")
    return results


def collected(hook_name: str, kind: type, **kwargs: Any) -> list[tuple[str, Any]]:
    """(plugin name, item) for every ``kind`` instance the implementations of a list-returning hook return."""
    registry = _registry_now()
    found = []
    for plugin_name, items in call_hook(hook_name, **kwargs):
        for item in items or ():
            if isinstance(item, kind):
                found.append((plugin_name, item))
            else:
                _report(registry, plugin_name, f"returned a {type(item).__name__} from {hook_name}, not a {kind.__name__}")
    return found


def problems() -> dict[str, list[str]]:
    """Plugin name -> sentences about plugins that failed to load or whose hooks raised."""
    return {name: list(found) for name, found in _registry_now().problems.items()}


# ---- techniques ------------------------------------------------------------------------------------------


def techniques() -> dict[str, Technique]:
    """Every valid technique by name, family by family in registration order; one that breaks the contract is
    reported under ``describe_plugins()``, not loaded."""
    from viz_server.techniques import FAMILIES

    found: dict[str, Technique] = {}
    for _plugin, technique in collected("register_techniques", Technique):
        if not check_technique(technique):
            found.setdefault(technique.name, technique)
    ordered = sorted(found.values(), key=lambda t: FAMILIES.index(t.family))  # stable: registration order within a family
    return {technique.name: technique for technique in ordered}


def get_technique(name: str) -> Technique:
    available = techniques()
    if name not in available:
        raise UserError(f"no technique named '{name}'; installed: {', '.join(sorted(available)) or 'none'}.")
    return available[name]


def suite(name: str) -> list[str]:
    """Names of the techniques that declare themselves part of audit suite ``name``."""
    return [technique.name for technique in techniques().values() if name in technique.suites]


def describe_plugins() -> list[dict[str, Any]]:
    """Installed plugins with their source, version, hooks and techniques (what `viz-server plugins` lists)."""
    registry = _registry_now()
    by_plugin: dict[str, list[Technique]] = {}
    for plugin_name, technique in collected("register_techniques", Technique):
        by_plugin.setdefault(plugin_name, []).append(technique)
    described = []
    for name, plugin in registry.manager.list_name_plugin():
        if plugin is None:
            continue
        hooks = sorted(caller.name for caller in registry.manager.get_hookcallers(plugin) or [])
        builtin = name in registry.builtin
        project, version = registry.distributions.get(name, ("registered", ""))
        valid, problems = [], {}
        for technique in by_plugin.get(name, []):
            found = check_technique(technique)
            if found:
                label = technique.name if isinstance(getattr(technique, "name", None), str) else type(technique).__name__
                problems[label] = found
            else:
                valid.append(technique.describe())
        if name in registry.problems:
            problems["plugin"] = registry.problems[name]
        if not hooks and not problems:
            continue  # a package that only lists other plugin modules
        described.append(
            {
                "name": name,
                "source": "built-in" if builtin else project,
                "version": viz_server.__version__ if builtin else version,
                "hooks": hooks,
                "techniques": valid,
                "problems": problems,
            }
        )
    for name, sentences in registry.problems.items():
        if not registry.manager.has_plugin(name):
            described.append({"name": name, "source": "not loaded", "version": "", "hooks": [], "techniques": [], "problems": {"plugin": sentences}})
    return described


def fingerprint(hook_names: tuple[str, ...]) -> str:
    """A short hash of the plugins (name and version) implementing any of these hooks: it changes when such a
    plugin is installed, removed or upgraded (the conversion cache keys on it)."""
    import hashlib

    registry = _registry_now()
    names = sorted({implementation.plugin_name for hook_name in hook_names for implementation in getattr(registry.manager.hook, hook_name).get_hookimpls()})
    described = [f"{name}={viz_server.__version__ if name in registry.builtin else registry.distributions.get(name, ('', ''))[1]}" for name in names]
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:10]
