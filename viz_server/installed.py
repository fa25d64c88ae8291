"""What the installed plugins provide: their techniques, audit suites and a description of each plugin.

The registry (``viz_server.plugins``) only loads plugins and calls hooks; this module reads what the
``register_techniques`` hook returns against the technique contract (``viz_server.techniques``). A technique
that breaks the contract is described with its problems, never offered.
"""

from __future__ import annotations

from typing import Any

from viz_server.errors import UserError
from viz_server.plugins import collected, problems, registered_plugins
from viz_server.techniques import FAMILIES, Technique, check_technique


def techniques() -> dict[str, Technique]:
    """Every valid technique by name, family by family, in plugin registration order within a family (built-ins
    first); of two with one name, the one pluggy calls first (the later-registered plugin) is kept."""
    order = {plugin["name"]: index for index, plugin in enumerate(registered_plugins())}
    found: dict[str, tuple[str, Technique]] = {}
    for plugin_name, technique in collected("register_techniques", Technique):
        if not check_technique(technique):
            found.setdefault(technique.name, (plugin_name, technique))
    ordered = sorted(found.values(), key=lambda pair: (FAMILIES.index(pair[1].family), order.get(pair[0], len(order))))
    return {technique.name: technique for _plugin, technique in ordered}


def get_technique(name: str) -> Technique:
    available = techniques()
    if name not in available:
        raise UserError(f"no technique named '{name}'; installed: {', '.join(sorted(available)) or 'none'}.")
    return available[name]


def check_applies(technique: Technique, task: str, model_name: str, forward_only: str = "") -> None:
    """One sentence when ``technique`` does not apply to the model: not for its task, or needing the torch graph of a
    model that runs forward-only (``forward_only`` says why); the second names the techniques that do apply."""
    technique.check_task(task, model_name)
    if forward_only and not technique.applies(task, forward_only=True):
        usable = [other.name for other in techniques().values() if other.applies(task, forward_only=True)]
        raise UserError(
            f"{model_name} runs forward-only on onnxruntime ({forward_only.rstrip('.')}), and {technique.title} needs its differentiable "
            f"graph; techniques that run on it: {', '.join(usable) or 'none installed'}."
        )


def suite(name: str) -> list[str]:
    """Names of the techniques that declare themselves part of audit suite ``name``."""
    return [technique.name for technique in techniques().values() if name in technique.suites]


def describe_plugins() -> list[dict[str, Any]]:
    """Installed plugins with their source, version, hooks, valid techniques and problems (what `viz-server
    plugins` lists); a package that only lists other plugin modules is left out."""
    by_plugin: dict[str, list[Technique]] = {}
    for plugin_name, technique in collected("register_techniques", Technique):
        by_plugin.setdefault(plugin_name, []).append(technique)
    reported = problems()
    described = []
    for plugin in registered_plugins():
        valid, found = [], {}
        for technique in by_plugin.get(plugin["name"], []):
            broken = check_technique(technique)
            if broken:
                label = technique.name if isinstance(getattr(technique, "name", None), str) else type(technique).__name__
                found[label] = broken
            else:
                valid.append(technique.describe())
        if plugin["name"] in reported:
            found["plugin"] = reported[plugin["name"]]
        if not plugin["hooks"] and not found:
            continue
        described.append({**plugin, "techniques": valid, "problems": found})
    return described
