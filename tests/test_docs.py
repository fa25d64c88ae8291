"""Documentation tests in Datasette's manner: every hook is documented and exercised by a test, every technique
is in the README, every toolkit module is in the plugin guide, every setting and spec field is in the README's
tables (and settings are read in one module only), and the core names no technique."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import viz_server_plugins
from viz_server import hookspecs, installed, plugins
from viz_server.config import SETTINGS
from viz_server.model.spec import SPEC_FIELDS

ROOT = Path(__file__).resolve().parents[1]
GUIDE = (ROOT / "docs" / "plugins.md").read_text()
README = (ROOT / "README.md").read_text()
HOOKS = [name for name, value in inspect.getmembers(hookspecs, inspect.isfunction) if hasattr(value, "viz_server_spec")]
TESTS = {path: path.read_text() for path in (ROOT / "tests").rglob("*.py") if path.name != "test_docs.py"}


def test_hooks_are_found():
    assert len(HOOKS) >= 7 and "register_techniques" in HOOKS


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_documented(hook):
    assert re.search(rf"^### {hook}$", GUIDE, re.MULTILINE), f"docs/plugins.md has no section '### {hook}'"
    assert (getattr(hookspecs, hook).__doc__ or "").strip(), f"hookspecs.{hook} needs a docstring"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_is_exercised_by_a_test(hook):
    using = [path.name for path, text in TESTS.items() if hook in text]
    assert using, f"no test mentions the hook {hook}"


@pytest.mark.parametrize("hook", HOOKS)
def test_every_hook_has_a_builtin_implementation(hook):
    """Datasette's rule: a hook exists because a real (built-in) plugin uses it."""
    manager = plugins.plugin_manager()
    builtin = set(plugins.DEFAULT_PLUGINS) | set(viz_server_plugins.PLUGINS)
    implementations = {impl.plugin_name for impl in getattr(manager.hook, hook).get_hookimpls()}
    assert implementations & builtin, f"no built-in plugin implements {hook}"


@pytest.mark.parametrize("name", sorted(installed.techniques()))
def test_every_technique_is_in_the_readme(name):
    assert f"`{name}`" in README, f"README's technique table does not list {name}"


def test_every_toolkit_module_is_in_the_guide():
    modules = sorted(path.stem for path in (ROOT / "plugins" / "toolkit").glob("*.py") if path.stem != "__init__")
    missing = [module for module in modules if f"| `{module}` |" not in GUIDE]
    assert not missing, f"docs/plugins.md's toolkit table lacks {missing}"


def test_no_technique_name_in_the_core():
    """Audits, defaults and pages come from technique metadata; the core never names a technique."""
    names = sorted(installed.techniques())
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, names)) + r")\b")
    found = []
    for path in (ROOT / "viz_server").rglob("*"):
        if path.suffix in (".py", ".html", ".js", ".css"):
            for number, line in enumerate(path.read_text().splitlines(), 1):
                if pattern.search(line):
                    found.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:80]}")
    assert not found, "technique names in the core:\n" + "\n".join(found)


def test_techniques_import_only_the_toolkit_and_the_contract():
    """One technique per module; no technique imports another technique module."""
    technique_modules = {name.rsplit(".", 1)[1] for name in viz_server_plugins.PLUGINS if hasattr(__import__(name, fromlist=["_"]), "register_techniques")}
    problems = []
    for module in sorted(technique_modules):
        tree = ast.parse((ROOT / "plugins" / f"{module}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("viz_server_plugins"):
                imported = (node.module or "").split(".")
                if len(imported) > 1 and imported[1] != "toolkit":
                    problems.append(f"{module} imports {node.module}")
        registered = __import__(f"viz_server_plugins.{module}", fromlist=["_"]).register_techniques()
        if len(registered) != 1:
            problems.append(f"{module} registers {len(registered)} techniques")
    assert not problems, problems


def spec_field_row(field) -> str:
    changes = "yes: verified again at each value" if field.changes_input else "no"
    return f"| `{field.name}` | {field.type} | `{field.flag}` | `{field.name}` | {changes} | {field.help} |"


def setting_row(setting) -> str:
    return f"| `{setting.variable}` | {f'`{setting.default}`' if setting.default else 'unset'} | {setting.help} |"


def table_under(document: str, heading: str) -> list[str]:
    """The rows of the table under ``heading`` (header and rule left out)."""
    section = document.split(f"\n{heading}\n", 1)[1].split("\n#", 1)[0]
    return [line for line in section.splitlines() if line.startswith("| `")]


def test_the_readmes_settings_table_is_the_settings_table():
    """Row for row, defaults and help included: an undocumented, stale or invented setting fails here."""
    assert table_under(README, "### Settings") == [setting_row(setting) for setting in SETTINGS.values() if not setting.internal]


def test_every_setting_the_code_names_is_in_the_table():
    """A VIZ_SERVER_* name anywhere in the installed code is a setting of ``viz_server.config.SETTINGS``."""
    named = set()
    for folder in ("viz_server", "plugins", "models"):
        for path in (ROOT / folder).rglob("*"):
            if path.suffix in (".py", ".html", ".js"):
                named |= set(re.findall(r"VIZ_SERVER_[A-Z_]+[A-Z]", path.read_text()))
    assert named <= set(SETTINGS), sorted(named - set(SETTINGS))


def test_settings_are_read_from_the_environment_in_one_module():
    """Only viz_server/config.py reads the environment (passing it on to a child process is not reading it)."""
    reading = re.compile(r"os\.environ\.get\(|os\.getenv\(|os\.environ\[|environ\.get\(")
    found = []
    for folder in ("viz_server", "plugins", "models"):
        for path in (ROOT / folder).rglob("*.py"):
            if path != ROOT / "viz_server" / "config.py":
                found += [f"{path.relative_to(ROOT)}:{number}" for number, line in enumerate(path.read_text().splitlines(), 1) if reading.search(line)]
    assert not found, found


def test_the_readmes_spec_table_is_the_spec_field_table():
    """Row for row: name, type, CLI flag, form and API field, whether it changes the input, help."""
    assert table_under(README, "### The model spec") == [spec_field_row(field) for field in SPEC_FIELDS.values()]
