"""The model frontend: any exported ONNX image model -> a verified, differentiable torch graph.

guard -> normalize -> convert -> verify -> checks -> ``LoadedModel``, one stage per module, run by
``pipeline.load_model`` (also ``viz_server.load_model``); ``cache`` keeps conversions by content hash,
``runtime`` runs onnxruntime sessions and fixed-batch graphs. This package imports none of them itself, so that
reading a spec (``spec``) costs no torch import.
"""
