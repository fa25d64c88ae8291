"""The model frontend: any exported ONNX image model -> a verified, differentiable torch graph.

guard -> normalize -> convert -> verify -> ``LoadedModel`` (see DESIGN.md section 1).
"""

from viz_server.model.loaded import ConversionReport, LoadedModel, load_model
from viz_server.model.spec import ModelSpec

__all__ = ["ConversionReport", "LoadedModel", "ModelSpec", "load_model"]
