"""Every hook works through a plugin registered at run time, as a third-party one would be, and a plugin whose
hook raises is reported without breaking anything else. (Converters, decoders, renderers and techniques are
also exercised through a real installed entry point in test_plugins.py.)"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from model_zoo import tiny_model

from viz_server import hookimpl, installed, load_model, plugins
from viz_server.cli import main
from viz_server.errors import UserError
from viz_server.presentation import Section, report_sections


@pytest.fixture
def registered():
    """Register plugin objects for one test; forget them (and rediscover plugins) afterwards."""
    added = []

    def register(plugin, name):
        plugins.plugin_manager().register(plugin, name=name)
        added.append(plugin)
        return plugin

    yield register
    plugins.reset_plugin_manager()


def constant_head_model() -> bytes:
    """All-zero head weights: the same scores whatever the image (as a timm model's zero-initialized head)."""
    return tiny_model(head_weight=np.zeros((3, 4)))


def test_builtin_model_check_names_a_model_whose_scores_ignore_the_input():
    model = load_model(constant_head_model(), use_cache=False)
    findings = [finding["finding"] for finding in model.conversion.findings]
    assert any("same scores" in finding for finding in findings), findings
    assert model.describe()["conversion"]["findings"] == model.conversion.findings


def test_builtin_model_check_is_quiet_on_a_trained_model(shapes_model):
    assert shapes_model.conversion.findings == []


def test_a_plugin_model_check_adds_findings_or_refuses(registered):
    class Findings:
        @hookimpl
        def model_checks(self, model):
            return [f"{model.spec.task} model with {len(model.layers)} layers"]

    registered(Findings(), "findings")
    loaded = load_model(constant_head_model(), use_cache=False)
    assert {"check": "findings", "finding": "classification model with 5 layers"} in loaded.conversion.findings

    class Refuse:
        @hookimpl
        def model_checks(self, model):
            raise UserError("this organisation does not analyse models without a model card.")

    registered(Refuse(), "refuse")
    with pytest.raises(UserError, match="model card"):
        load_model(constant_head_model(), use_cache=False)


def report(jobs):
    return {"kind": "audit", "title": "t", "status": "done", "jobs": jobs}


def job(technique, status="done", metrics=None, error=None):
    return {
        "technique": technique,
        "status": status,
        "error": error,
        "model": {"name": "m"},
        "result": {"metrics": metrics or {}} if status == "done" else None,
    }


def test_builtin_report_section_says_which_explanations_to_trust():
    passed = {"sanity_check": {"passed": True}, "deletion_auc": [0.2], "insertion_auc": [0.8]}
    failed = {"sanity_check": {"passed": False}, "deletion_auc": [0.4], "insertion_auc": [0.5]}
    sections = report_sections(report([job("a", metrics=passed), job("b", metrics=failed), job("c", "failed", error="it broke.")]))
    by_title = {section.title: section for section in sections}
    assert by_title["Parts that did not run"].level == "warning" and "it broke." in by_title["Parts that did not run"].sentences[0]
    trust = by_title["Which explanations to trust"]
    assert trust.level == "warning" and trust.rows[1][2] == "passed (on the 1 picture checked)" and trust.rows[2][2] == "FAILED (on the 1 picture checked)"
    assert report_sections(report([job("a", metrics=passed)]))[0].level == "info"


def test_a_raising_report_section_is_reported_and_the_others_still_show(registered):
    class Broken:
        @hookimpl
        def report_sections(self, report):
            raise RuntimeError("boom")

    class Extra:
        @hookimpl
        def report_sections(self, report):
            return [Section("Jobs", [f"{len(report['jobs'])} jobs"])]

    registered(Broken(), "broken_sections")
    registered(Extra(), "extra_sections")
    titles = [section.title for section in report_sections(report([job("a", "failed", error="x")]))]
    assert titles == ["Parts that did not run", "Jobs"]
    assert any("report_sections" in sentence and "boom" in sentence for sentence in plugins.problems()["broken_sections"])


def test_a_plugin_command_runs_from_the_cli(registered, capsys):
    def hello(args):
        if args.name == "bad":
            raise UserError("bad is not a name.")
        print(f"hello {args.name}")
        return 0

    class Command:
        @hookimpl
        def register_commands(self, commands):
            parser = commands.add_parser("hello", help="say hello")
            parser.add_argument("name")
            parser.set_defaults(handler=hello)

    registered(Command(), "command")
    assert main(["hello", "world"]) == 0 and capsys.readouterr().out == "hello world\n"
    assert main(["hello", "bad"]) == 2 and capsys.readouterr().err == "viz-server: error: bad is not a name.\n"


def test_the_builtin_models_command_comes_from_the_models_plugin(capsys):
    assert "register_commands" in {
        hook for plugin in installed.describe_plugins() if plugin["name"] == "viz_server_models.commands" for hook in plugin["hooks"]
    }
    assert main(["models"]) == 0
    assert "shapes_cnn" in capsys.readouterr().out


def test_a_command_clash_is_reported_not_fatal(registered, capsys):
    class Clash:
        @hookimpl
        def register_commands(self, commands):
            commands.add_parser("run")

    registered(Clash(), "clash")
    assert main(["models"]) == 0
    assert "clash" in plugins.problems()


def test_a_raising_technique_hook_is_reported_and_the_rest_still_load(registered):
    class Broken:
        @hookimpl
        def register_techniques(self):
            raise ImportError("missing dependency")

    registered(Broken(), "broken_techniques")
    assert "saliency" in installed.techniques()
    described = {plugin["name"]: plugin for plugin in installed.describe_plugins()}
    assert "missing dependency" in described["broken_techniques"]["problems"]["plugin"][0]


def test_a_plugin_that_fails_to_import_is_reported(monkeypatch):
    from importlib import metadata

    class BrokenEntryPoint:
        name, dist = "ghost", None

        def load(self):
            raise ModuleNotFoundError("No module named 'ghost_plugin'")

    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda group: [*real(group=group), BrokenEntryPoint()])
    plugins.reset_plugin_manager()
    try:
        assert "saliency" in installed.techniques()
        assert "ghost_plugin" in plugins.problems()["ghost"][0]
        assert any(plugin["name"] == "ghost" and plugin["source"] == "not loaded" for plugin in installed.describe_plugins())
    finally:
        monkeypatch.undo()
        plugins.reset_plugin_manager()


def test_builtin_report_section_names_robustness_results_with_masking():
    masked = job("robustness_curve", metrics={"masking_findings": {"pgd": ["a gradient-free attack broke 2 image(s)"], "ensemble": []}})
    clean = job("adversarial", metrics={"masking_findings": []})
    sections = {section.title: section for section in report_sections(report([masked, clean]))}
    section = sections["Robustness results that cannot be trusted"]
    assert section.level == "warning" and len(section.sentences) == 1 and "gradient-free" in section.sentences[0]
    assert "Robustness results that cannot be trusted" not in {s.title for s in report_sections(report([clean]))}


# ---- hooks are called as pluggy calls them -------------------------------------------------------------


def section_plugin(title, **options):
    """A plugin object whose ``report_sections`` returns one section titled ``title`` (hookimpl ``options``)."""

    class Plugin:
        @hookimpl(**options)
        def report_sections(self, report):
            return [Section(title, [])]

    return Plugin()


def called_titles():
    return [items[0].title for _plugin, items in plugins.call_hook("report_sections", report=report([])) if items and items[0].title.startswith("t-")]


def test_hooks_run_in_pluggys_order_tryfirst_and_trylast_included(registered):
    registered(section_plugin("t-first", tryfirst=True), "first")
    registered(section_plugin("t-early"), "early")
    registered(section_plugin("t-late"), "late")
    registered(section_plugin("t-last", trylast=True), "last")
    registered(section_plugin("t-also-first", tryfirst=True), "also_first")
    assert called_titles() == ["t-also-first", "t-first", "t-late", "t-early", "t-last"]
    direct = [items[0].title for items in plugins.plugin_manager().hook.report_sections(report=report([])) if items and items[0].title.startswith("t-")]
    assert called_titles() == direct  # exactly pluggy's own order
    assert [(name, items[0].title) for name, items in plugins.call_hook("report_sections", report=report([])) if items and items[0].title == "t-late"] == [
        ("late", "t-late")
    ]


def test_a_new_style_wrapper_wraps_every_implementation(registered):
    seen = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def report_sections(self, report):
            results = yield
            seen.append(len(results))
            return [*results, [Section("t-added by the wrapper", [])]]

    registered(section_plugin("t-plain"), "plain")
    registered(Wrapper(), "wrapper")
    called = plugins.call_hook("report_sections", report=report([]))
    assert seen == [len(called) - 1]
    assert called[-1] == ("wrapper", [Section("t-added by the wrapper", [])])
    assert [section.title for section in report_sections(report([]))][-1] == "t-added by the wrapper"


def test_an_old_style_hookwrapper_sees_and_can_replace_the_outcome(registered):
    class OldStyle:
        @hookimpl(hookwrapper=True)
        def report_sections(self, report):
            outcome = yield
            outcome.force_result([items for items in outcome.get_result() if not items or items[0].title != "t-hidden"])

    registered(section_plugin("t-hidden"), "hidden")
    registered(section_plugin("t-shown"), "shown")
    registered(OldStyle(), "old_style")
    assert called_titles() == ["t-shown"]


def test_a_raising_wrapper_is_reported_and_the_call_goes_on_without_it(registered):
    class BrokenSetUp:
        @hookimpl(wrapper=True)
        def report_sections(self, report):
            raise RuntimeError("set-up broke")
            yield  # noqa: B901 - never reached: a wrapper is a generator

    class BrokenTeardown:
        @hookimpl(wrapper=True)
        def report_sections(self, report):
            yield
            raise RuntimeError("teardown broke")

    registered(section_plugin("t-plain"), "plain")
    registered(BrokenSetUp(), "broken_set_up")
    registered(BrokenTeardown(), "broken_teardown")
    assert called_titles() == ["t-plain"]
    found = plugins.problems()
    assert "set-up broke" in found["broken_set_up"][0] and "teardown broke" in found["broken_teardown"][0]


def test_a_user_error_from_an_implementation_passes_through_wrappers(registered):
    class Refusing:
        @hookimpl
        def report_sections(self, report):
            raise UserError("refused on purpose.")

    caught = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def report_sections(self, report):
            try:
                return (yield)
            except UserError as exc:
                caught.append(str(exc))
                raise

    registered(Refusing(), "refusing")
    registered(Wrapper(), "wrapper")
    with pytest.raises(UserError, match="refused on purpose"):
        plugins.call_hook("report_sections", report=report([]))
    assert caught == ["refused on purpose."] and "refusing" not in plugins.problems()


def test_command_line_hooks_are_called_before_listed_modules_load():
    """`viz-server --help` builds its parser from the plugins themselves; the modules they list in PLUGINS (the
    techniques) are imported only by the first other hook."""
    import subprocess
    import sys

    probe = (
        "import argparse, sys; from viz_server import plugins;"
        "commands = argparse.ArgumentParser().add_subparsers(); plugins.call_hook('register_commands', commands=commands);"
        "print(sorted(commands.choices), 'viz_server_plugins.saliency' in sys.modules);"
        "plugins.call_hook('register_techniques'); print('viz_server_plugins.saliency' in sys.modules)"
    )
    printed = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True).stdout.splitlines()
    assert printed == ["['models'] False", "True"]


def test_a_command_in_a_listed_module_is_reported(monkeypatch):
    """A register_commands in a module a package lists in PLUGINS would never reach the parser: it is reported."""
    import types

    package = types.ModuleType("late_commands_package")
    package.PLUGINS = ("late_commands_package.commands",)
    commands = types.ModuleType("late_commands_package.commands")
    commands.register_commands = hookimpl(lambda commands: None)
    monkeypatch.setitem(sys.modules, "late_commands_package", package)
    monkeypatch.setitem(sys.modules, "late_commands_package.commands", commands)
    monkeypatch.setattr(plugins, "DEFAULT_PLUGINS", (*plugins.DEFAULT_PLUGINS, "late_commands_package"))
    plugins.reset_plugin_manager()
    try:
        assert "move it to the plugin's own module" in plugins.problems()["late_commands_package.commands"][0]
    finally:
        monkeypatch.undo()
        plugins.reset_plugin_manager()


def test_completing_the_load_keeps_an_eager_loads_order(monkeypatch):
    """Two installed packages, each listing a module: registered as built-ins, then A, A's module, B, B's module
    (an eager, depth-first load), so pluggy's call order does not depend on when the lists were read."""
    import types
    from importlib import metadata

    for package in ("zz_first", "zz_second"):
        module = types.ModuleType(package)
        module.PLUGINS = (f"{package}.child",)
        child = types.ModuleType(f"{package}.child")
        child.report_sections = hookimpl(lambda report: [])
        monkeypatch.setitem(sys.modules, package, module)
        monkeypatch.setitem(sys.modules, f"{package}.child", child)

    class EntryPoint:
        dist = None

        def __init__(self, name):
            self.name = name

        def load(self):
            return sys.modules[self.name]

    real = metadata.entry_points
    monkeypatch.setattr(metadata, "entry_points", lambda group: [*real(group=group), EntryPoint("zz_first"), EntryPoint("zz_second")])
    plugins.reset_plugin_manager()
    try:
        names = [plugin["name"] for plugin in plugins.registered_plugins()]
    finally:
        monkeypatch.undo()
        plugins.reset_plugin_manager()
    ours = [name for name in names if name.startswith("zz_")]
    assert ours == ["zz_first", "zz_first.child", "zz_second", "zz_second.child"]
    assert names.index("zz_first") > max(names.index(name) for name in names if name.startswith("viz_server_plugins."))


# ---- the summary card says what the sections say ------------------------------------------------------------


def ranking_job(sentences, scores):
    """A done attribution-ranking job whose metrics come from the toolkit's own verdict and recommendation."""
    from viz_server_plugins.toolkit import ranking

    value, note = ranking.recommendation(scores, sentences)
    metrics = {
        "verdict": sentences,
        "recommended": value,
        "ranking": [item.to_json() for item in scores],
        "headline": {"recommended_explanation": {"value": value, "label": "the explanation method to believe", "better": None, "note": note, "count": 10}},
    }
    return {**job("attribution_ranking", metrics=metrics), "model": {"name": "m"}}


@pytest.mark.parametrize("case", ["tied", "edges", "none"])
def test_the_summary_card_states_every_qualifier_its_section_states(case):
    """A card line that drops "but not more faithful than edges", a tie, or why nothing is recommended fails here."""
    from viz_server_plugins.toolkit import ranking

    rng = np.random.default_rng(4)
    base = rng.normal(0.3, 0.06, 10)

    def scores(label, gaps, role=ranking.METHOD, sanity=(True,)):
        flat = np.zeros((10, 3))
        return ranking.Scores(label, role, np.asarray(gaps), flat, flat + 1, np.asarray(gaps), np.asarray(gaps), np.ones(10, bool), list(sanity))

    random = scores("random map (uniform noise)", rng.normal(0, 0.02, 10), ranking.BASELINE)
    if case == "tied":
        entries = [scores("Grad-CAM", base + rng.normal(0, 0.02, 10)), scores("Guided Grad-CAM", base), random]
    elif case == "edges":
        entries = [
            scores("Grad-CAM", base + 0.2),
            random,
            scores("edges of the image (Sobel, no model)", base + 0.2 + rng.normal(0, 0.01, 10), ranking.BASELINE),
        ]
    else:
        entries = [scores("Grad-CAM", base, sanity=(False, False)), random]
    data = {"kind": "audit", "title": "t", "status": "done", "jobs": [ranking_job(ranking.verdict(entries), entries)]}
    data["models"] = [
        {
            "name": "m",
            "sha256": "0" * 64,
            "conversion": {},
            "spec": {"task": "classification", "guessed": ["normalization"], "sources": [["mean", "a guess: ImageNet statistics"]]},
        }
    ]
    from viz_server.presentation import report_headlines

    data["headline"] = report_headlines(data)
    sections = {section.title: section for section in report_sections(data)}
    card = " ".join(" ".join(map(str, row)) for row in sections["Summary"].rows) + " ".join(sections["Summary"].sentences)
    verdict = sections["Which explanation to believe on m"].sentences
    qualifiers = [sentence for sentence in verdict if sentence.startswith("But ") or " are tied" in sentence]
    if case == "none":
        qualifiers = [verdict[0]]  # why nothing is recommended
    assert qualifiers and all(sentence in card for sentence in qualifiers), (qualifiers, card)
    assert "Guessed for m, not stated by its file or by you: normalization (a guess: ImageNet statistics)." in card
