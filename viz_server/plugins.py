"""The plugin registry: built-in plugins and installed ones, registered the same way, called as pluggy calls them.

Built-ins are listed once in ``DEFAULT_PLUGINS`` and registered with ``pm.register`` exactly as third-party
plugins are when their ``viz_server`` entry points load (Datasette's ``DEFAULT_PLUGINS``, pytest's
``default_plugins``). A plugin module may name more plugin modules in a ``PLUGINS`` tuple (like pytest's
``pytest_plugins``): the built-in package ``viz_server_plugins`` lists its modules that way, and a
third-party package with several plugins can do the same.

Loading happens in two steps, so that ``viz-server --help`` imports no model code: the plugins themselves
(``DEFAULT_PLUGINS`` and entry points) are imported when the registry is first used; the modules they list in
``PLUGINS`` when the first hook other than those in ``COMMAND_LINE_HOOKS`` is called.

Hooks are called through pluggy itself, so ``tryfirst``, ``trylast`` and wrappers (``wrapper=True`` and
old-style ``hookwrapper=True``) behave as pluggy documents them: implementations run last registered first.
An implementation that raises is reported (``problems()``, ``viz-server plugins``, the plugins page) and
skipped, never allowed to break a page or a command; ``UserError`` passes through, since a hook raises it on
purpose (a model check refusing a model). This module knows no contract: what the hooks return is read by
``viz_server.installed`` and the stages that call them.
"""

from __future__ import annotations

import contextvars
import functools
import hashlib
import importlib
import logging
import threading
from collections.abc import Generator
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, cast

import pluggy

from viz_server import hookspecs
from viz_server.errors import UserError
from viz_server.version import __version__

DEFAULT_PLUGINS = ("viz_server_plugins", "viz_server_models.commands")
"""The built-in plugins (packages may list more modules in ``PLUGINS``)."""

ENTRY_POINT_GROUP = "viz_server"
COMMAND_LINE_HOOKS = frozenset({"register_commands"})
"""Hooks called before the modules listed in ``PLUGINS`` are imported: implement them in a plugin's own module
(the one ``DEFAULT_PLUGINS`` or the entry point names)."""

log = logging.getLogger(__name__)


@dataclass
class _Registry:
    manager: pluggy.PluginManager
    builtin: set[str] = field(default_factory=set)
    distributions: dict[str, tuple[str, str]] = field(default_factory=dict)  # plugin name -> (project, version)
    problems: dict[str, list[str]] = field(default_factory=dict)  # plugin name -> sentences
    listed: dict[str, tuple[str, ...]] = field(default_factory=dict)  # plugin -> the PLUGINS modules it lists, not yet imported


_lock = threading.RLock()
_registry: _Registry | None = None


def _registry_now(complete: bool = True) -> _Registry:
    """The registry, with the modules plugins list in ``PLUGINS`` imported too unless ``complete`` is False."""
    global _registry
    with _lock:
        if _registry is None:
            manager = pluggy.PluginManager("viz_server")
            manager.add_hookspecs(hookspecs)
            registry = _Registry(manager)
            for module_name in DEFAULT_PLUGINS:
                _register_module(registry, module_name, builtin=True, defer_listed=True)
            for entry_point in metadata.entry_points(group=ENTRY_POINT_GROUP):
                _register_entry_point(registry, entry_point)
            _registry = registry
        if complete and _registry.listed:
            _complete(_registry)
        return _registry


def _complete(registry: _Registry) -> None:
    """Import the modules listed in ``PLUGINS``, in the order an eager load registers them (each plugin followed by
    the modules it lists, depth first; every built-in before the installed plugins), so that pluggy's call order
    does not depend on when the lists were read. Installed plugins, registered before the built-ins' lists were
    imported, are registered again after them."""
    installed = [(name, plugin) for name, plugin in registry.manager.list_name_plugin() if plugin is not None and name not in registry.builtin]
    for _name, plugin in installed:
        registry.manager.unregister(plugin)
    for name in [name for name in registry.listed if name in registry.builtin]:
        _register_listed(registry, name, builtin=True)
    for name, plugin in installed:
        registry.manager.register(plugin, name=name)
        _register_listed(registry, name, builtin=False)


def _register_listed(registry: _Registry, parent: str, builtin: bool) -> None:
    distribution = registry.distributions.get(parent)
    for child in registry.listed.pop(parent, ()):
        _register_module(registry, child, builtin, distribution, listed=True)


def _register_module(
    registry: _Registry, module_name: str, builtin: bool, distribution: tuple[str, str] | None = None, listed: bool = False, defer_listed: bool = False
) -> None:
    """Import and register one plugin module, then the modules it lists in ``PLUGINS`` (at once, depth first, or
    when the registry completes: ``defer_listed``)."""
    if registry.manager.has_plugin(module_name) or registry.manager.is_blocked(module_name):
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
    late = sorted(COMMAND_LINE_HOOKS & {caller.name for caller in registry.manager.get_hookcallers(module) or []}) if listed else []
    for hook_name in late:
        _report(
            registry,
            module_name,
            f"implements {hook_name} in a module listed in PLUGINS, which loads after the command line is built; move it to the plugin's own module",
        )
    children = tuple(getattr(module, "PLUGINS", ()))
    if defer_listed:
        registry.listed[module_name] = children
    for child in () if defer_listed else children:
        _register_module(registry, child, builtin, distribution, listed=True)


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
    registry.listed[entry_point.name] = tuple(getattr(plugin, "PLUGINS", ()))


def _report(registry: _Registry, plugin_name: str, sentence: str) -> None:
    log.warning("viz-server plugin %s %s", plugin_name, sentence)
    with _lock:
        found = registry.problems.setdefault(plugin_name, [])
        if sentence not in found:
            found.append(sentence)


def plugin_manager() -> pluggy.PluginManager:
    """The process-wide plugin manager, every plugin loaded (built once, on first use)."""
    return _registry_now().manager


def reset_plugin_manager() -> None:
    """Forget the manager so the next call rediscovers plugins (tests install plugins at run time)."""
    global _registry
    with _lock:
        _registry = None


# ---- calling hooks ----------------------------------------------------------------------------------------

_returned: contextvars.ContextVar[list[tuple[str, Any]] | None] = contextvars.ContextVar("viz_server_returned", default=None)


def call_hook(hook_name: str, **kwargs: Any) -> list[tuple[str, Any]]:
    """(plugin name, result) of every implementation of a hook, in pluggy's order: last registered first,
    ``tryfirst`` before and ``trylast`` after the rest, wrappers around them all. A result a wrapper put in
    place of the implementations' is credited to the outermost wrapper's plugin."""
    registry = _registry_now(complete=hook_name not in COMMAND_LINE_HOOKS)
    caller = getattr(registry.manager.hook, hook_name)
    implementations = caller.get_hookimpls()
    for implementation in implementations:
        _guard(registry, hook_name, implementation)
    wrappers = [implementation.plugin_name for implementation in implementations if implementation.wrapper or implementation.hookwrapper]
    returned: list[tuple[str, Any]] = []
    token = _returned.set(returned)
    try:
        results = caller(**kwargs)
    finally:
        _returned.reset(token)
    credited = {id(result): name for name, result in returned}
    return [(credited.get(id(result), wrappers[-1] if wrappers else hook_name), result) for result in results]


def _guard(registry: _Registry, hook_name: str, implementation: pluggy.HookImpl) -> None:
    """Make one implementation report and skip its own failure instead of raising (once per implementation)."""
    function = implementation.function
    if getattr(function, "_viz_server_guarded", False):
        return
    name = implementation.plugin_name

    def report(exc: BaseException) -> None:
        _report(registry, name, f"failed in {hook_name} ({type(exc).__name__}: {exc})")

    if implementation.wrapper or implementation.hookwrapper:

        @functools.wraps(function)
        def guarded(*args):
            try:
                teardown = cast(Generator[None, Any, Any], function(*args))
                next(teardown)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - a broken wrapper is skipped: the call goes on without it
                report(exc)
                return (yield)
            try:
                outcome = yield
            except BaseException as exc:  # noqa: BLE001 - what the implementations raised: the wrapper may handle it (and re-raise)
                return _finish(teardown, report, error=exc)
            return _finish(teardown, report, outcome=outcome)

    else:

        @functools.wraps(function)
        def guarded(*args):
            try:
                result = function(*args)
            except UserError:
                raise
            except Exception as exc:  # noqa: BLE001 - one plugin's bug must not break every page
                report(exc)
                return None
            returned = _returned.get()
            if returned is not None and result is not None:
                returned.append((name, result))
            return result

    guarded._viz_server_guarded = True  # type: ignore[attr-defined]
    implementation.function = guarded  # type: ignore[misc]  # pluggy calls hookimpl.function; the guard takes its place


def _finish(teardown, report, outcome: Any = None, error: BaseException | None = None) -> Any:
    """Run a wrapper's part after its ``yield``; a wrapper that fails there is reported and the outcome kept."""
    try:
        if error is not None:
            teardown.throw(error)
        else:
            teardown.send(outcome)
    except StopIteration as stop:
        return stop.value
    except UserError:
        raise
    except Exception as exc:  # noqa: BLE001
        if exc is error:
            raise
        report(exc)
    else:
        teardown.close()
        report(RuntimeError("the wrapper yielded more than once"))
    if error is not None:
        raise error
    return outcome


def collected(hook_name: str, kind: type, **kwargs: Any) -> list[tuple[str, Any]]:
    """(plugin name, item) for every ``kind`` instance the implementations of a list-returning hook return."""
    found = []
    for plugin_name, items in call_hook(hook_name, **kwargs):
        for item in items or ():
            if isinstance(item, kind):
                found.append((plugin_name, item))
            else:
                _report(_registry_now(), plugin_name, f"returned a {type(item).__name__} from {hook_name}, not a {kind.__name__}")
    return found


# ---- what is registered --------------------------------------------------------------------------------


def problems() -> dict[str, list[str]]:
    """Plugin name -> sentences about plugins that failed to load or whose hooks raised."""
    registry = _registry_now()
    with _lock:
        return {name: list(found) for name, found in registry.problems.items()}


def registered_plugins() -> list[dict[str, Any]]:
    """Every registered plugin in registration order (name, source, version, hooks), then those that failed
    to load (source "not loaded")."""
    registry = _registry_now()
    listed = []
    for name, plugin in registry.manager.list_name_plugin():
        if plugin is None:
            continue
        project, version = ("built-in", __version__) if name in registry.builtin else registry.distributions.get(name, ("registered", ""))
        hooks = sorted(caller.name for caller in registry.manager.get_hookcallers(plugin) or [])
        listed.append({"name": name, "source": project, "version": version, "hooks": hooks})
    for name in problems():
        if not registry.manager.has_plugin(name):
            listed.append({"name": name, "source": "not loaded", "version": "", "hooks": []})
    return listed


def fingerprint(hook_names: tuple[str, ...]) -> str:
    """A short hash of the plugins (name and version) implementing any of these hooks: it changes when such a
    plugin is installed, removed or upgraded (the conversion cache keys on it)."""
    registry = _registry_now()
    names = sorted({implementation.plugin_name for hook_name in hook_names for implementation in getattr(registry.manager.hook, hook_name).get_hookimpls()})
    described = [f"{name}={__version__ if name in registry.builtin else registry.distributions.get(name, ('', ''))[1]}" for name in names]
    return hashlib.sha256("\n".join(described).encode()).hexdigest()[:10]
