"""Several models' results of one technique side by side: one table of their metrics and one plot of every
metric that is a series (e.g. accuracy per epsilon, per severity). Generic: it reads only the Result contract."""

from __future__ import annotations

from typing import Any

from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import json_ready


def flatten(metrics: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"accuracy": {"pgd": [..]}} -> {"accuracy.pgd": [..]}."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def is_series(value: Any) -> bool:
    return isinstance(value, list) and len(value) >= 2 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)


def comparison_table(metrics: dict[str, dict[str, Any]]) -> list[list[Any]]:
    """Rows: one per metric (series shown as lists), one column per model (``metrics``: model name -> a result's
    metrics); header first."""
    flat = {model: flatten(json_ready(values)) for model, values in metrics.items()}
    keys = list(dict.fromkeys(key for values in flat.values() for key in values))
    return [["metric", *metrics]] + [[key, *(flat[model].get(key) for model in metrics)] for key in keys]


def series_keys(metrics: dict[str, dict[str, Any]]) -> list[str]:
    """The metrics that are a series for at least one model (what ``comparison_plot`` draws)."""
    flat = [flatten(json_ready(values)) for values in metrics.values()]
    return [key for key in dict.fromkeys(k for values in flat for k in values) if any(is_series(values.get(key)) for values in flat)]


def comparison_plot(metrics: dict[str, dict[str, Any]]) -> bytes | None:
    """One panel per series metric, one line per model; None when no metric is a series."""
    flat = {model: flatten(json_ready(values)) for model, values in metrics.items()}
    keys = series_keys(metrics)
    if not keys:
        return None
    pyplot = plotting()

    columns = min(3, len(keys))
    rows = -(-len(keys) // columns)
    figure, axes = pyplot.subplots(rows, columns, figsize=(3.6 * columns, 2.8 * rows), dpi=100, squeeze=False)
    for axis, key in zip(axes.ravel(), keys):
        for model, metrics in flat.items():
            if is_series(metrics.get(key)):
                axis.plot(metrics[key], marker="o", label=model)
        axis.set_title(key, fontsize=8)
        axis.legend(fontsize=7)
    for axis in axes.ravel()[len(keys) :]:
        axis.axis("off")
    return figure_png(figure)
