"""Writing a Result to a folder: ``result.json``, ``arrays.npz`` and one PNG per picture artifact."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from viz_server.techniques import Result


def write_result(result: Result, directory: str | Path) -> Path:
    """Write ``result`` into ``directory`` (created if needed); return the path of result.json."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for artifact in result.artifacts:
        if artifact.data:
            (folder / _safe_name(artifact.name)).write_bytes(artifact.data)
    if result.arrays:
        np.savez_compressed(folder / "arrays.npz", **result.arrays)
    summary = result.to_json()
    for entry in summary["artifacts"]:
        entry["name"] = _safe_name(entry["name"])
    target = folder / "result.json"
    target.write_text(json.dumps(summary, indent=2))
    return target


def _safe_name(name: str) -> str:
    """Artifact names come from plugins: keep them to one plain file name inside the result folder."""
    cleaned = "".join(c if c.isalnum() or c in "._-" else "_" for c in Path(name).name).lstrip(".")
    return cleaned or "artifact"
