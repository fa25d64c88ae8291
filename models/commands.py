"""The shipped models as a plugin: `viz-server models` lists them and the sample pictures (``register_commands``)."""

from __future__ import annotations

from viz_server import hookimpl
from viz_server_models import sample_images, shipped_models


def _list_models(args) -> int:
    for name, path in shipped_models().items():
        print(f"{name:<16} {path}")
    for name, path in sample_images().items():
        print(f"sample {name:<9} {path}")
    return 0


@hookimpl
def register_commands(commands):
    parser = commands.add_parser("models", allow_abbrev=False, help="list the shipped models and sample images")
    parser.set_defaults(handler=_list_models)
