"""Built-in input conventions (the ``register_input_conventions`` hook): producers whose exports say who made them.

- Ultralytics (YOLOv5/v8/v11 exports): metadata ``author: Ultralytics`` with ``imgsz`` and ``stride``; pictures are
  RGB scaled to [0, 1], no mean or std (``ultralytics.data.augment.LetterBox`` then ``im / 255``). Certain.
- PaddlePaddle (paddle2onnx exports: producer ``PaddlePaddle`` or axes named ``p2o.*``): PaddleOCR reads pictures
  with OpenCV (BGR); its text detectors normalize with ImageNet mean and std, its recognizers and direction
  classifiers with (x - 0.5) / 0.5 at 48 x 320 and 48 x 192; PaddleDetection and PaddleClas use RGB and ImageNet
  statistics. Which one an export is follows from its task and output, so it stays a guess.
- The torch exporter (``producer_name: pytorch``) with a 3-channel NCHW input: torchvision's and timm's
  convention, RGB in [0, 1] normalized by ImageNet mean and std. A guess: many torch models use other statistics.
"""

from __future__ import annotations

from viz_server import hookimpl
from viz_server.conventions import InputConvention, ModelFacts

IMAGENET = {"value_range": [0.0, 1.0], "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
HALF = {"value_range": [0.0, 1.0], "mean": [0.5], "std": [0.5]}


class Ultralytics(InputConvention):
    name = "ultralytics"
    title = "Ultralytics export"
    certain = True

    def recognizes(self, facts: ModelFacts) -> bool:
        metadata = facts.metadata
        return metadata.get("author", "").strip().lower() == "ultralytics" or {"imgsz", "stride", "names"} <= set(metadata)

    def basis(self, facts: ModelFacts) -> str:
        return "metadata " + ", ".join(key for key in ("author", "imgsz", "stride") if key in facts.metadata)

    def fields(self, facts: ModelFacts) -> dict:
        return {"layout": "NCHW", "channel_order": "RGB", "value_range": [0.0, 1.0], "mean": [0.0], "std": [1.0]}


class PaddlePaddle(InputConvention):
    name = "paddlepaddle"
    title = "PaddlePaddle export"

    def recognizes(self, facts: ModelFacts) -> bool:
        return facts.producer == "PaddlePaddle" or any(name.startswith("p2o.") for name in facts.dim_names)

    def basis(self, facts: ModelFacts) -> str:
        product, _fields = self._product(facts)
        found = "producer PaddlePaddle" if facts.producer == "PaddlePaddle" else "paddle2onnx axis names"
        return f"{found}; read as {product}"

    def fields(self, facts: ModelFacts) -> dict:
        return self._product(facts)[1]

    def _product(self, facts: ModelFacts) -> tuple[str, dict]:
        dynamic_height = len(facts.input_dims) == 4 and facts.input_dims[2] is None
        if facts.task == "dense":
            return "a PaddleOCR text detector", {"layout": "NCHW", "channel_order": "BGR", **IMAGENET, "image_size": [640, 640]}
        if facts.task == "sequence":
            return "a PaddleOCR text recognizer", {"layout": "NCHW", "channel_order": "BGR", **HALF, "image_size": [48, 320]}
        if facts.task == "classification" and dynamic_height:
            return "a PaddleOCR direction classifier", {"layout": "NCHW", "channel_order": "BGR", **HALF, "image_size": [48, 192]}
        return "a PaddleDetection or PaddleClas model", {"layout": "NCHW", "channel_order": "RGB", **IMAGENET}


class TorchExporter(InputConvention):
    name = "torch_exporter"
    title = "torch export, torchvision/timm convention"

    def recognizes(self, facts: ModelFacts) -> bool:
        return facts.producer == "pytorch" and len(facts.input_dims) == 4 and facts.input_dims[1] == 3

    def basis(self, facts: ModelFacts) -> str:
        return "producer pytorch"

    def fields(self, facts: ModelFacts) -> dict:
        return {"layout": "NCHW", "channel_order": "RGB", **IMAGENET}


@hookimpl
def register_input_conventions():
    return [Ultralytics(), PaddlePaddle(), TorchExporter()]
