"""The model frontend: any exported ONNX image model -> a verified, differentiable torch graph.

guard -> normalize -> convert -> verify -> checks -> ``LoadedModel``, one stage per module, run by
``pipeline.load_model``; ``cache`` keeps conversions by content hash.
"""

from viz_server.model.loaded import ConversionReport, LoadedModel
from viz_server.model.pipeline import load_model
from viz_server.model.spec import ModelSpec

__all__ = ["ConversionReport", "LoadedModel", "ModelSpec", "load_model"]
