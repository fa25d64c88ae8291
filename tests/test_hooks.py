"""Every hook works through a plugin registered at run time, as a third-party one would be, and a plugin whose
hook raises is reported without breaking anything else. (Converters, decoders, renderers and techniques are
also exercised through a real installed entry point in test_plugins.py.)"""

from __future__ import annotations

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
    assert trust.level == "warning" and trust.rows[1][2] == "passed" and trust.rows[2][2] == "FAILED"
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
