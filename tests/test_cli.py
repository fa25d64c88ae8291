"""The CLI as a user runs it: real subprocesses, exit codes, one-sentence errors, files written."""

import json
import subprocess
import sys

import pytest
from hostile import hostile_images, hostile_models

from viz_server.cli import main


def viz(*args, cwd=None):
    """The CLI in a real subprocess, exactly as a user runs it."""
    return subprocess.run([sys.executable, "-m", "viz_server.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.fixture
def viz_inprocess(capsys, monkeypatch):
    """The same ``main`` in this process (no interpreter start-up per call), for the long tables of cases."""

    def run(*args, cwd=None):
        if cwd is not None:
            monkeypatch.chdir(cwd)
        code = main([str(arg) for arg in args])
        captured = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, captured.out, captured.err)

    return run


def assert_one_sentence_exit_2(completed):
    assert completed.returncode == 2, (completed.returncode, completed.stderr)
    lines = [line for line in completed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("viz-server: error: "), completed.stderr
    assert "Traceback" not in completed.stderr


def test_plugins_lists_saliency_with_params():
    completed = viz("plugins", "--json")
    assert completed.returncode == 0
    techniques = {t["name"]: t for p in json.loads(completed.stdout) for t in p["techniques"]}
    assert [param["name"] for param in techniques["saliency"]["params"]][:4] == ["target", "region", "reduce", "smooth_samples"]
    assert "saliency" in viz("plugins").stdout


def test_inspect_shipped_model_json():
    completed = viz("inspect", "shapes_cnn", "--json")
    assert completed.returncode == 0, completed.stderr
    described = json.loads(completed.stdout)
    assert described["spec"]["labels"] == ["circle", "square", "triangle", "cross"]
    assert described["conversion"]["worst_rel_error"] <= 1e-4
    assert described["layers"]["default_cam_layer"]
    assert "conversion" in viz("inspect", "shapes_cnn").stdout


def test_run_saliency_writes_result(tmp_path, shape_pictures):
    image = tmp_path / "square.png"
    image.write_bytes(shape_pictures[1][1])
    out = tmp_path / "out"
    completed = viz("run", "saliency", "shapes_cnn", "--image", image, "--target", "square", "--reduce", "sum", "--out", out)
    assert completed.returncode == 0, completed.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["provenance"]["params"].items() >= {"target": "square", "reduce": "sum"}.items()
    assert result["metrics"]["targets"] == ["class square"] and result["metrics"]["objective"] == [{"class": "square", "index": 1}]
    for artifact in result["artifacts"]:
        assert (out / artifact["name"]).is_file()
    import numpy as np

    arrays = np.load(out / "arrays.npz")
    assert arrays["saliency"].shape == (1, 64, 64)


def test_the_method_ranking_reads_masks_beside_the_pictures(tmp_path, viz_inprocess):
    """``--image FILE`` finds ``FILE-stem.mask.png`` beside it; the ranking then scores localization too."""
    from pictures import png_bytes

    from viz_server_models import shapes

    data = shapes.make_dataset(2, seed=11, congruent_fraction=1.0)
    arguments = []
    for index, (picture, mask) in enumerate(zip(data.images, data.masks)):
        (tmp_path / f"p{index}.png").write_bytes(png_bytes(picture))
        (tmp_path / f"p{index}.mask.png").write_bytes(png_bytes((mask * 255).astype("uint8")))
        arguments += ["--image", tmp_path / f"p{index}.png"]
    options = ["--methods", "saliency", "--smooth-samples", "0", "--sanity-images", "1", "--sensitivity-samples", "0", "--road-steps", "2"]
    completed = viz_inprocess("run", "attribution_ranking", "shapes_cnn", *arguments, *options, "--out", tmp_path / "out")
    assert completed.returncode == 0, completed.stderr
    result = json.loads((tmp_path / "out" / "result.json").read_text())
    assert result["metrics"]["masks"] is True and result["provenance"]["masks"] == [True, True]
    assert (tmp_path / "out" / "ranking.png").read_bytes()[:4] == b"\x89PNG"
    assert "ROAD" in completed.stdout


def test_run_help_lists_technique_params():
    completed = viz("run", "saliency", "--help")
    assert completed.returncode == 0
    assert "--reduce" in completed.stdout and "--target" in completed.stdout


@pytest.mark.parametrize("name", sorted(hostile_models()))
def test_hostile_models_via_cli(tmp_path, name, viz_inprocess):
    data, expectation = hostile_models()[name]
    path = tmp_path / name
    path.write_bytes(data)
    completed = viz_inprocess("inspect", path)
    if expectation == "ok":
        assert completed.returncode == 0, completed.stderr
    elif expectation.startswith("forward-only: "):
        assert completed.returncode == 0 and "forward-only on onnxruntime" in completed.stdout, completed.stderr
    else:
        assert_one_sentence_exit_2(completed)
        assert expectation in completed.stderr


@pytest.mark.parametrize("name", sorted(hostile_images()))
def test_hostile_images_via_cli(tmp_path, name, viz_inprocess):
    data, expectation = hostile_images()[name]
    path = tmp_path / name
    path.write_bytes(data)
    completed = viz_inprocess("run", "saliency", "shapes_cnn", "--image", path, "--out", tmp_path / "out")
    if expectation == "ok":
        assert completed.returncode == 0, completed.stderr
        assert (tmp_path / "out" / "saliency_0.png").is_file()
    else:
        assert_one_sentence_exit_2(completed)


@pytest.mark.parametrize(
    "args,fragment",
    [
        (["run", "nonexistent", "shapes_cnn", "--out", "x"], "no technique named"),
        (["inspect", "missing.onnx"], "no model file"),
        (["run", "saliency", "shapes_cnn", "--out", "x"], "needs at least one image"),
        (["inspect", "shapes_cnn", "--layout", "NWHC"], "layout"),
        (["inspect", "shapes_cnn", "--mean", "1,2"], "one per channel"),
    ],
)
def test_usage_errors_are_one_sentence(tmp_path, args, fragment, viz_inprocess):
    completed = viz_inprocess(*args, cwd=tmp_path)
    assert_one_sentence_exit_2(completed)
    assert fragment in completed.stderr


def test_hostile_model_in_a_real_process(tmp_path):
    path = tmp_path / "external_data.onnx"
    path.write_bytes(hostile_models()["external_data.onnx"][0])
    assert_one_sentence_exit_2(viz("inspect", path))


def test_technique_options_are_never_taken_as_abbreviations(tmp_path, viz_inprocess):
    """`--channel 3` is the neuron's channel, not an abbreviation of the spec flag --channel-order."""
    image = tmp_path / "digit.png"
    from viz_server_models import sample_images

    image.write_bytes(sample_images()["digit-3"].read_bytes())
    completed = viz_inprocess(
        "run",
        "neuron_gradient",
        "digits_linear",
        "--image",
        image,
        "--layer",
        "/1/Gemm",
        "--channel",
        "3",
        "--top-patches",
        "0",
        "--out",
        tmp_path / "out",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr
    assert json.loads(completed.stdout)["metrics"]["channel"] == 3


def test_compare_writes_one_table_and_plot(tmp_path, viz_inprocess):
    from viz_server_models import shipped_models
    from viz_server_models.shapes import write_image_set

    copy = tmp_path / "shapes_copy.onnx"
    copy.write_bytes(shipped_models()["shapes_cnn"].read_bytes())
    write_image_set(tmp_path / "set", per_class=3, seed=2)
    completed = viz_inprocess(
        "compare",
        "robustness_curve",
        "shapes_cnn",
        copy,
        "--image-set",
        tmp_path / "set",
        "--epsilons",
        "0,8/255",
        "--steps",
        "3",
        "--out",
        tmp_path / "out",
        "--json",
    )
    assert completed.returncode == 0, completed.stderr
    table = json.loads(completed.stdout)
    assert table[0] == ["metric", "shapes_cnn", "shapes_copy"]
    rows = {row[0]: row[1:] for row in table[1:]}
    assert rows["accuracy.ensemble"][0] == rows["accuracy.ensemble"][1] and len(rows["accuracy.ensemble"][0]) == 2
    assert (tmp_path / "out" / "comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "shapes_cnn" / "result.json").is_file()
    one = viz_inprocess("compare", "robustness_curve", "shapes_cnn", "--out", tmp_path / "x")
    assert one.returncode == 2 and "at least two models" in one.stderr


def test_audit_from_the_command_line_writes_the_report_and_gates_on_its_figures(tmp_path, viz_inprocess):
    from viz_server_models.shapes import write_image_set

    write_image_set(tmp_path / "set", per_class=1, seed=4)
    out = tmp_path / "audit"
    passed = viz_inprocess("audit", "shapes_cnn", "--image-set", tmp_path / "set", "--technique", "saliency", "--fail-over", "parity=1e-4", "--out", out)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["status"] == "done" and report["sections"][0]["title"] == "Summary"
    assert report["headline"]["shapes_cnn"]["parity"]["value"] < 1e-4
    html = (out / "report.html").read_text()
    assert "Summary" in html and html.count("data:image/png;base64,") >= 4 and 'src="/' not in html
    assert "parity:" in passed.stdout and "4/4" not in passed.stderr and "1/1 saliency: done" in passed.stderr

    gated = viz_inprocess("audit", "shapes_cnn", "--image-set", tmp_path / "set", "--technique", "saliency", "--fail-under", "accuracy=0.5", "--out", out)
    assert gated.returncode == 1 and "FAILED: accuracy was not measured by this audit" in gated.stdout
    strict = viz_inprocess("audit", "shapes_cnn", "--image-set", tmp_path / "set", "--technique", "saliency", "--fail-over", "parity=0", "--out", out)
    assert strict.returncode == 1 and "FAILED: parity = " in strict.stdout and "above the threshold 0" in strict.stdout
    assert_one_sentence_exit_2(viz_inprocess("audit", "shapes_cnn", "--fail-under", "accuracy", "--out", out))
    assert_one_sentence_exit_2(viz_inprocess("audit", "shapes_cnn", "--suite", "nonsense", "--image-set", tmp_path / "set", "--out", out))


def test_a_forward_only_model_from_the_command_line(tmp_path, viz_inprocess):
    """A classifier with a Loop: inspected as forward-only, explained by occlusion and RISE, gradient techniques
    refused in one sentence, and audited with the techniques that run on it."""
    from task_models import with_loop

    from viz_server_models import sample_images, shipped_models
    from viz_server_models.shapes import write_image_set

    model = tmp_path / "looped.onnx"
    model.write_bytes(with_loop(shipped_models()["shapes_cnn"].read_bytes()))
    image = sample_images()["circle"]
    inspected = viz_inprocess("inspect", model)
    assert inspected.returncode == 0 and "forward-only on onnxruntime: the model uses the control-flow op Loop" in inspected.stdout
    for name in ("occlusion", "rise"):
        explained = viz_inprocess("run", name, model, "--image", image, "--out", tmp_path / name)
        assert explained.returncode == 0, explained.stderr
        assert json.loads((tmp_path / name / "result.json").read_text())["metrics"]["sanity_check"]["steps"]
    refused = viz_inprocess("run", "gradcam", model, "--image", image, "--out", tmp_path / "gradcam")
    assert_one_sentence_exit_2(refused)
    assert "needs its differentiable graph; techniques that run on it: occlusion, rise" in refused.stderr
    write_image_set(tmp_path / "set", per_class=3, seed=4)
    audited = viz_inprocess("audit", model, "--image-set", tmp_path / "set", "--out", tmp_path / "audit")
    assert audited.returncode == 0, audited.stdout + audited.stderr
    report = json.loads((tmp_path / "audit" / "report.json").read_text())
    assert {job["technique"] for job in report["jobs"]} == {"class_accuracy", "calibration"}  # the suites' techniques that need no graph
    assert "no torch graph" in report["headline"]["looped"]["parity"]["note"]


def test_an_audit_gate_on_a_figure_that_is_not_a_number_fails():
    from viz_server.audit import Gate

    assert "cannot be claimed" in Gate.parse("parity=1e-4", under=False).failure({"parity": {"value": float("nan"), "note": ""}})
    assert Gate.parse("accuracy=0.5", under=True).failure({"accuracy": {"value": 0.75}}) is None


def test_technique_params_cannot_take_the_command_lines_own_option_names():
    """Every option of `run` and `compare` is reserved, so a param named like one is refused by the contract
    check instead of being silently taken by the command line."""
    from viz_server.cli import build_parser
    from viz_server.techniques import RESERVED_PARAM_NAMES, Param, Technique, check_technique

    commands = build_parser()._subparsers._group_actions[0].choices  # noqa: SLF001
    for command in ("run", "compare"):
        actions = commands[command]._actions  # noqa: SLF001
        names = {option.lstrip("-").replace("-", "_") for action in actions for option in action.option_strings}
        names |= {action.dest for action in actions if not action.option_strings}
        assert names <= RESERVED_PARAM_NAMES, names - RESERVED_PARAM_NAMES

    class Clashing(Technique):
        name, title, family, summary = "clashing", "Clashing", "network", "Declares params named like CLI options."
        params = (Param("labels", "str", "", "clashes with --labels"), Param("image_set", "str", "", "clashes with --image-set"))

        def run(self, ctx, params):
            raise AssertionError("never run")

    problems = check_technique(Clashing())
    assert any("image_set, labels" in problem and "command line" in problem for problem in problems), problems


def test_an_embedding_model_is_audited_against_a_second_image(tmp_path, viz_inprocess):
    """Its explanations show what makes each picture similar to the second image; without one, the audit says so."""
    from task_models import export_task_model

    from viz_server.testing import sample_inputs

    model = tmp_path / "embedder.onnx"
    model.write_bytes(export_task_model("embedder"))
    for name, data in sample_inputs(3):
        (tmp_path / name).write_bytes(data)
    first, second, third = (tmp_path / name for name, _ in sample_inputs(3))
    out = tmp_path / "audit"
    refused = viz_inprocess("audit", model, "--image", first, "--technique", "saliency", "--out", out)
    assert_one_sentence_exit_2(refused)
    assert "embedding model" in refused.stderr and "--second-image" in refused.stderr
    audited = viz_inprocess("audit", model, "--image", first, "--image", second, "--second-image", third, "--technique", "saliency", "--out", out)
    assert audited.returncode == 0, audited.stdout + audited.stderr
    job = json.loads((out / "report.json").read_text())["jobs"][0]
    assert job["status"] == "done" and job["result"]["metrics"]["targets"][0].startswith("similarity to the second image")


def test_gates_can_use_the_bound_of_a_figures_interval(tmp_path, viz_inprocess):
    """accuracy 1.000 on six pictures holds accuracy=0.9 but not accuracy.low=0.9: the data allow 0.61."""
    from viz_server.audit import Gate
    from viz_server.techniques import proportion_headline

    figures = {"accuracy": proportion_headline(6, 6, "accuracy")}
    assert Gate.parse("accuracy=0.9", under=True).failure(figures) is None
    failure = Gate.parse("accuracy.low=0.9", under=True).failure(figures)
    assert failure.startswith("accuracy.low = 0.609") and "(n = 6)" in failure
    assert "cannot be claimed" in Gate.parse("parity.high=1", under=False).failure({"parity": {"value": 1e-6, "count": 3, "low": None, "high": None}})
    assert_one_sentence_exit_2(viz_inprocess("audit", "shapes_cnn", "--fail-under", "accuracy.median=0.5", "--out", tmp_path))
