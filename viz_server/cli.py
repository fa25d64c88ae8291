"""`viz-server ...`: list plugins, inspect a model, run a technique, serve the web UI.

Bad input prints one sentence on stderr and exits 2; nothing prints a traceback unless VIZ_SERVER_DEBUG=1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import threading
import warnings
from pathlib import Path
from typing import Any

from viz_server.config import setting
from viz_server.errors import UserError
from viz_server.model.spec import SPEC_FIELDS
from viz_server.version import __version__


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="path of an .onnx file, or the name of a shipped model (see `viz-server models`)")
    group = parser.add_argument_group("model spec (overrides what the model's metadata says or what is guessed)")
    group.add_argument("--spec", metavar="FILE", help="JSON or TOML file with spec fields")
    for field in SPEC_FIELDS.values():
        group.add_argument(field.flag, dest=f"spec_{field.name}", metavar="VALUE", help=field.help)


def _add_input_options(parser: argparse.ArgumentParser) -> None:
    """Images, parameters and seed: shared by `run` and `compare`."""
    parser.add_argument("--image", action="append", default=[], metavar="FILE", help="input image (repeat for a batch)")
    parser.add_argument(
        "--image-set",
        metavar="DIR_OR_ZIP",
        help="labeled image set: a folder or .zip with one sub-folder per class (NAME.mask.png beside NAME.png: its object mask)",
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="set a technique parameter")
    parser.add_argument("--seed", type=int, default=0, help="random seed, recorded in the result (default 0)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="viz-server", description="Analyse what an ONNX image model has learned.", allow_abbrev=False)
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    plugins = commands.add_parser("plugins", allow_abbrev=False, help="list installed plugins, their hooks and techniques")
    plugins.add_argument("--json", action="store_true", help="print JSON")
    plugins.set_defaults(handler=cmd_plugins)

    inspect = commands.add_parser("inspect", allow_abbrev=False, help="show a model's inputs, outputs, spec, layers and conversion report")
    _add_model_options(inspect)
    inspect.add_argument("--json", action="store_true", help="print JSON")
    inspect.set_defaults(handler=cmd_inspect)

    run = commands.add_parser("run", allow_abbrev=False, help="run a technique (`viz-server run TECHNIQUE --help` lists its parameters)")
    run.add_argument("technique", help="technique name (see `viz-server plugins`)")
    _add_model_options(run)
    _add_input_options(run)
    run.add_argument("--second-image", metavar="FILE", help="second image, for techniques that need one")
    run.add_argument("--out", metavar="DIR", required=True, help="folder for result.json, arrays.npz and PNGs")
    run.add_argument("--json", action="store_true", help="print the result summary as JSON")
    _add_device_option(run)
    run.set_defaults(handler=cmd_run, technique_options=True)

    compare = commands.add_parser("compare", allow_abbrev=False, help="run one technique on several models and write their metrics side by side")
    compare.add_argument("technique", help="technique name (see `viz-server plugins`)")
    compare.add_argument("models", nargs="+", help="two or more .onnx files or shipped model names")
    _add_input_options(compare)
    compare.add_argument("--out", metavar="DIR", required=True, help="folder: one sub-folder per model plus comparison.csv/.json/.png")
    compare.add_argument("--json", action="store_true", help="print the comparison table as JSON")
    _add_device_option(compare)
    compare.set_defaults(handler=cmd_compare, technique_options=True)

    audit = commands.add_parser("audit", allow_abbrev=False, help="audit a model as the web does; write report.html and report.json; gate with thresholds")
    _add_model_options(audit)
    audit.add_argument("--image", action="append", default=[], metavar="FILE", help="input image (repeat); FILE-stem.mask.png beside it is its object mask")
    audit.add_argument("--image-set", metavar="DIR_OR_ZIP", help="labeled image set: one sub-folder per class (NAME.mask.png: object masks)")
    audit.add_argument("--second-image", metavar="FILE", help="embedding models: the picture their explanations compare with")
    audit.add_argument(
        "--suite",
        action="append",
        default=[],
        metavar="NAME",
        help="audit suite to run (repeat; default: attribution, and dataset when every picture is labeled)",
    )
    audit.add_argument("--technique", action="append", default=[], metavar="NAME", help="also run this technique with its defaults (repeat)")
    audit.add_argument(
        "--fail-under",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="exit 1 when a headline figure is below VALUE (repeat); KEY.low=VALUE gates on its 95%% interval's lower bound",
    )
    audit.add_argument(
        "--fail-over",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="exit 1 when a headline figure is above VALUE, e.g. parity=1e-4 (KEY.high: the bound)",
    )
    audit.add_argument("--out", metavar="DIR", required=True, help="folder for report.html and report.json")
    _add_device_option(audit)
    audit.set_defaults(handler=cmd_audit)

    serve = commands.add_parser("serve", allow_abbrev=False, help="start the web UI (embedded job runner unless VIZ_SERVER_BROKER_URL is set)")
    serve.add_argument("--host", help="address to bind (default VIZ_SERVER_HOST or 127.0.0.1; any other address requires the access token)")
    serve.add_argument("--port", type=int, help="port to listen on (default VIZ_SERVER_PORT or 8000)")
    _add_device_option(serve)
    serve.set_defaults(handler=cmd_serve)

    worker = commands.add_parser("worker", allow_abbrev=False, help="run a Celery worker (needs VIZ_SERVER_BROKER_URL, a shared database and data folder)")
    worker.add_argument("--concurrency", type=int, default=1, help="jobs run at once by this worker (default 1)")
    _add_device_option(worker)
    worker.set_defaults(handler=cmd_worker)

    from viz_server.plugins import call_hook

    call_hook("register_commands", commands=commands)  # plugins' commands (a clash is reported, not fatal)
    return parser


def _technique_parser(technique) -> argparse.ArgumentParser:
    """Options generated from a technique's params schema: ``--name value`` for each param."""
    parser = argparse.ArgumentParser(prog=f"viz-server run {technique.name}", add_help=False, allow_abbrev=False)
    for param in technique.params:
        detail = f" (default {param.default!r}"
        if param.choices:
            detail += f"; one of {', '.join(param.choices)}"
        if param.minimum is not None or param.maximum is not None:
            detail += f"; range {param.minimum if param.minimum is not None else '-inf'}..{param.maximum if param.maximum is not None else 'inf'}"
        parser.add_argument(f"--{param.name.replace('_', '-')}", dest=param.name, metavar=param.kind.upper(), help=param.help + detail + ")")
    return parser


def _resolve_model_path(value: str) -> str:
    if Path(value).exists():
        return value
    from viz_server_models import shipped_models

    shipped = shipped_models()
    if value in shipped:
        return str(shipped[value])
    raise UserError(f"no model file at {value} and no shipped model of that name (shipped: {', '.join(shipped)}).")


def _spec_overrides(args: argparse.Namespace) -> dict[str, Any]:
    overrides = {}
    for name in SPEC_FIELDS:
        value = getattr(args, f"spec_{name}", None)
        if value is None:
            continue
        if name == "labels" and Path(value).is_file():
            try:
                value = json.dumps([line.strip() for line in Path(value).read_text(encoding="utf-8").splitlines() if line.strip()])
            except (OSError, UnicodeDecodeError) as exc:
                raise UserError(f"cannot read labels file {value}: {exc}.") from None
        overrides[name] = value
    return overrides


def _add_device_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--device",
        metavar="NAME",
        help="where the torch graph computes: cpu, cuda, cuda:N or auto (default VIZ_SERVER_DEVICE or cpu; job processes inherit it)",
    )


def _use_device(name: str) -> None:
    """Check ``--device`` (one sentence when the GPU it names is not there) and pass it on as ``VIZ_SERVER_DEVICE``."""
    from viz_server.config import override
    from viz_server.model.device import resolve

    resolve(name)
    override("VIZ_SERVER_DEVICE", name.strip().lower())


def _memory_budget() -> int:
    """The job memory budget (``VIZ_SERVER_JOB_MEMORY_MB``): a model whose graph says one picture needs more is
    refused before anything runs it, as the server refuses it at inspection."""
    from viz_server.config import load_settings

    return load_settings().job_memory_bytes


def _load(args: argparse.Namespace):
    from viz_server.model.pipeline import load_model

    return load_model(_resolve_model_path(args.model), spec_file=args.spec, memory_budget=_memory_budget(), **_spec_overrides(args))


def _read_image(path: str) -> tuple[str, bytes]:
    file = Path(path)
    if not file.is_file():
        raise UserError(f"no image file at {path}.")
    if file.stat().st_size > 64 * 2**20:
        raise UserError(f"{file.name} is larger than 64 MiB; give a smaller picture.")
    return file.name, file.read_bytes()


# ---- commands -----------------------------------------------------------------------------------------


def cmd_plugins(args: argparse.Namespace) -> int:
    from viz_server.installed import describe_plugins

    described = describe_plugins()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    for plugin in described:
        print(f"{plugin['name']}  {plugin['version']}  ({plugin['source']})")
        for technique in plugin["techniques"]:
            print(f"  {technique['name']:<20} [{technique['family']}] {technique['summary']}")
            for param in technique["params"]:
                extra = f" one of {'|'.join(param['choices'])}" if "choices" in param else ""
                print(f"      --{param['name']:<16} {param['kind']:<7} default {param['default']!r}{extra}: {param['help']}")
        if plugin["hooks"] and plugin["hooks"] != ["register_techniques"]:
            print(f"  hooks: {', '.join(plugin['hooks'])}")
        for technique, problems in plugin["problems"].items():
            print(f"  {technique}: PROBLEM ({'; '.join(problems)})")
    return 0


def cmd_inspect(args: argparse.Namespace) -> int:
    model = _load(args)
    described = model.describe()
    if args.json:
        print(json.dumps(described, indent=2))
        return 0
    spec, conversion = model.spec, model.conversion
    print(f"model      {model.name}  sha256 {model.sha256[:16]}  producer {conversion.producer or '?'}  opset {conversion.opset}")
    for value in described["inputs"]:
        print(f"input      {value['name']} {value['shape']}")
    for value in described["outputs"]:
        print(f"output     {value['name']} {value['shape']}")
    guessed = f"  (guessed: {', '.join(spec.guessed)})" if spec.guessed else ""
    print(
        f"spec       {spec.layout} {spec.channels}x{spec.height}x{spec.width} range {list(spec.value_range)} "
        f"mean {list(spec.mean)} std {list(spec.std)} {spec.channel_order}{guessed}"
    )
    for field, source in spec.sources:
        print(f"  source   {field}: {source}")
    labels = ", ".join(spec.labels[:10]) + (" ..." if len(spec.labels) > 10 else "")
    print(f"labels     {spec.num_classes} outputs: {labels or '(none)'}")
    print(f"task       {spec.task} (read by the {model.decoder.name} decoder: {model.decoder.summary})")
    if conversion.forward_only:
        print(f"conversion forward-only on onnxruntime: {conversion.forward_only}; only techniques that need no gradients run on it")
    print(
        f"conversion worst relative error vs onnxruntime {conversion.worst_rel_error:.2e}; "
        f"batch {'any' if conversion.max_batch is None else f'{conversion.max_batch} at a time'}; "
        f"input gradient norm {conversion.gradient_norm:.3g}{'; from cache' if conversion.from_cache else ''}"
    )
    for check in conversion.parity:
        print(f"  parity   batch {check['batch']}: max abs {check['max_abs_error']:.2e}, max rel {check['max_rel_error']:.2e}")
    for note in conversion.passes:
        print(f"  pass     {note}")
    for warning in conversion.warnings:
        print(f"  warning  {warning}")
    for finding in conversion.findings:
        print(f"  check    {finding['finding']} ({finding['check']})")
    print(f"layers     {len(model.layers)} (default Grad-CAM layer: {model.layers.default_cam_layer}; first conv: {model.layers.first_conv})")
    for layer in model.layers:
        marks = ("S" if layer.spatial else "-") + ("R" if layer.kind == "relu" else "-")
        shape = "x".join("?" if d is None else str(d) for d in layer.output_shape)
        print(f"  {marks} {layer.name[:48]:<48} {layer.op:<20} {layer.kind:<11} {shape}")
    return 0


def cmd_run(args: argparse.Namespace, extra: list[str]) -> int:
    from viz_server.installed import get_technique
    from viz_server.result_files import write_result
    from viz_server.runner import run_technique

    technique = get_technique(args.technique)
    raw_params = _raw_params(technique, args, extra)
    images, labels, masks = _gather_inputs(args)
    second = _read_image(args.second_image) if args.second_image else None
    model = _load(args)

    def report(done: int, total: int, message: str) -> None:
        if not args.json:
            print(f"  [{done}/{total}] {message}", file=sys.stderr)

    result = run_technique(technique.name, model, images, raw_params, seed=args.seed, second_image=second, labels=labels, masks=masks, on_progress=report)
    path = write_result(result, args.out)
    if args.json:
        summary = result.to_json()
        summary["result_json"] = str(path)
        print(json.dumps(summary, indent=2, default=str))
        return 0
    print(f"{technique.name} on {model.name}: {len(result.artifacts)} artifacts written to {path.parent}")
    for key, value in result.metrics.items():
        print(f"  {key}: {value}")
    for caveat in result.caveats:
        print(f"  caveat: {caveat}")
    return 0


def _gather_inputs(args: argparse.Namespace) -> tuple[list[tuple[str, bytes]], list[str | None], list[bytes | None]]:
    """Images, their labels and their object masks (``NAME.mask.png`` beside ``NAME.png``)."""
    from viz_server.image_sets import MASK_MARK, pair_masks, read_image_set

    images = [_read_image(path) for path in args.image]
    labels: list[str | None] = [None] * len(images)
    masks = [_read_image(str(mask))[1] if (mask := Path(path).with_name(Path(path).stem + MASK_MARK + ".png")).is_file() else None for path in args.image]
    if args.image_set:
        labeled = pair_masks(read_image_set(args.image_set))
        images += [(name, data) for name, data, _, _ in labeled]
        labels += [label for _, _, label, _ in labeled]
        masks += [mask for _, _, _, mask in labeled]
    return images, labels, masks


def _raw_params(technique, args: argparse.Namespace, extra: list[str]) -> dict[str, Any]:
    options, unknown = _technique_parser(technique).parse_known_args(extra)
    if unknown:
        names = ", ".join(f"--{p.name.replace('_', '-')}" for p in technique.params) or "none"
        raise UserError(f"unknown option {unknown[0]} for {technique.name}; its options are: {names}.")
    raw: dict[str, Any] = {}
    for item in args.set:
        if "=" not in item:
            raise UserError(f"--set {item!r} must look like KEY=VALUE.")
        key, value = item.split("=", 1)
        raw[key.strip()] = value
    raw.update({name: value for name, value in vars(options).items() if value is not None})
    return raw


def cmd_audit(args: argparse.Namespace) -> int:
    """Exit 0 when the audit ran in full and every gate holds; 1 when a gate fails or a part did not run."""
    from viz_server.audit import Gate, audit_techniques, run_audit, shown_figure
    from viz_server.model.spec import read_sidecar
    from viz_server.techniques import DEFAULT_AUDIT_SUITES, LABELED_AUDIT_SUITES

    gates = [Gate.parse(text, True) for text in args.fail_under] + [Gate.parse(text, False) for text in args.fail_over]
    images, labels, masks = _gather_inputs(args)
    overrides = {**(dict(read_sidecar(args.spec)) if args.spec else {}), **_spec_overrides(args)}
    labeled = bool(labels) and all(labels)
    suites = args.suite or ([] if args.technique else list(LABELED_AUDIT_SUITES if labeled else DEFAULT_AUDIT_SUITES))

    def progress(done: int, total: int, technique: str, status: str, seconds: float) -> None:
        bar = "#" * round(20 * done / total)
        print(f"\r[{bar:<20}] {done}/{total} {technique}: {status} ({seconds:.1f} s)", file=sys.stderr, flush=True)

    pictures = [(name, data, label, mask) for (name, data), label, mask in zip(images, labels, masks)]
    second = _read_image(args.second_image) if args.second_image else None
    report, html = run_audit(
        _resolve_model_path(args.model),
        overrides,
        pictures,
        lambda task, forward_only: audit_techniques(task, suites, args.technique, forward_only),
        progress,
        second_image=second,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.html").write_text(html, encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    figures = next(iter(report["headline"].values()), {})
    for key, entry in figures.items():
        print(f"{key}: {shown_figure(entry)}")
    failures = [failure for gate in gates if (failure := gate.failure(figures))]
    failures += [f"{job['technique']} did not run: {job['error'] or job['status']}" for job in report["jobs"] if job["status"] != "done"]
    for failure in failures:
        print(f"FAILED: {failure}")
    print(f"report: {out / 'report.html'}")
    return 1 if failures else 0


def cmd_compare(args: argparse.Namespace, extra: list[str]) -> int:
    import csv

    from viz_server.comparison import comparison_plot, comparison_table
    from viz_server.installed import get_technique
    from viz_server.model.pipeline import load_model
    from viz_server.result_files import write_result
    from viz_server.runner import run_technique

    technique = get_technique(args.technique)
    if len(args.models) < 2:
        raise UserError("give at least two models to compare.")
    raw = _raw_params(technique, args, extra)
    images, labels, masks = _gather_inputs(args)
    results = {}
    budget = _memory_budget()
    for source in args.models:
        model = load_model(_resolve_model_path(source), memory_budget=budget)
        name = model.name if model.name not in results else f"{model.name}-{len(results)}"
        results[name] = run_technique(technique.name, model, images, raw, seed=args.seed, labels=labels, masks=masks)
        write_result(results[name], Path(args.out) / name)
    table = comparison_table({name: result.metrics for name, result in results.items()})
    out = Path(args.out)
    with open(out / "comparison.csv", "w", newline="") as handle:
        csv.writer(handle).writerows([[json.dumps(cell) if isinstance(cell, (list, dict)) else cell for cell in row] for row in table])
    (out / "comparison.json").write_text(json.dumps(table, indent=2))
    plot = comparison_plot({name: result.metrics for name, result in results.items()})
    if plot:
        (out / "comparison.png").write_bytes(plot)
    if args.json:
        print(json.dumps(table, indent=2))
    else:
        for row in table:
            print(" | ".join(str(cell) for cell in row))
        print(f"written: {out / 'comparison.csv'}" + (f", {out / 'comparison.png'}" if plot else ""))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from waitress import serve

    os.umask(0o077)  # the database, blobs, logs and token: readable by this user only
    from viz_server.web import create_app

    host = args.host if args.host is not None else setting("VIZ_SERVER_HOST")
    port = args.port if args.port is not None else setting("VIZ_SERVER_PORT")
    app = create_app(host=host, start_jobs=False)
    dispatcher = app.extensions["viz_dispatcher"]
    # pages answer at once; the plugins (and torch, which techniques import) load beside them, for the pages that
    # list techniques, before the job processes start importing the same (on a small machine they would compete)
    threading.Thread(target=_load_plugins_then, args=(dispatcher.start,), name="viz-server-plugins", daemon=True).start()
    token = app.extensions["viz_token"]
    settings = app.extensions["viz_settings"]
    link = f"http://{host}:{port}/" + (f"?token={token}" if token else "")
    print(f"viz-server: serving on {link}  (data in {settings.data_dir})", file=sys.stderr)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # run the cleanup below: job processes are stopped too
    try:
        serve(app, host=host, port=port, threads=16, ident="viz-server", _quiet=True)
    finally:
        dispatcher.stop()
    return 0


def _load_plugins_then(start_jobs) -> None:
    from viz_server.installed import techniques

    try:
        techniques()
    finally:
        start_jobs()


def cmd_worker(args: argparse.Namespace) -> int:
    from viz_server.jobs.celery_app import run_worker

    os.umask(0o077)
    run_worker(args.concurrency)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["--version"]:  # before any plugin loads
        print(__version__)
        return 0
    debug = False
    try:
        debug = setting("VIZ_SERVER_DEBUG")
        if not debug:
            warnings.simplefilter("ignore")  # library warnings are not the user's business; stderr stays one sentence
        parser = build_parser()
        if len(argv) >= 2 and argv[0] == "run" and any(a in ("-h", "--help") for a in argv[2:]) and not argv[1].startswith("-"):
            return _technique_help(parser, argv[1])
        args, extra = parser.parse_known_args(argv)
        if args.version:
            print(__version__)
            return 0
        if args.command is None:
            parser.print_help()
            return 0
        if getattr(args, "device", None):
            _use_device(args.device)
        if getattr(args, "technique_options", False):
            return args.handler(args, extra)
        if extra:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        return args.handler(args)
    except UserError as exc:
        print(f"viz-server: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # the reader went away (`viz-server plugins | head`): nothing more to say
        with contextlib.suppress(OSError, ValueError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error when Python flushes at exit
        return 0
    except Exception as exc:  # noqa: BLE001 - last line of defence: one sentence, no traceback
        if debug:
            raise
        from viz_server.jobs.failures import out_of_memory

        if out_of_memory(exc):
            print(
                "viz-server: error: ran out of memory: this work needs more than the job memory budget (VIZ_SERVER_JOB_MEMORY_MB); "
                "use fewer or smaller images, or a larger budget.",
                file=sys.stderr,
            )
            return 2
        print(f"viz-server: internal error: {type(exc).__name__}: {str(exc)[:300]} (set VIZ_SERVER_DEBUG=1 for details and please report it).", file=sys.stderr)
        return 1


def _technique_help(parser: argparse.ArgumentParser, name: str) -> int:
    from viz_server.installed import get_technique

    technique = get_technique(name)
    run_parser = parser._subparsers._group_actions[0].choices["run"]  # noqa: SLF001
    print(f"{technique.title} [{technique.family}]: {technique.summary}\n")
    run_parser.print_help()
    print(f"\n{technique.name} parameters (also settable as --set NAME=VALUE):")
    for action in _technique_parser(technique)._actions:  # noqa: SLF001
        print(f"  {action.option_strings[0]:<22} {action.help}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
