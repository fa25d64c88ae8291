"""Small models of every task, built in the tests and exported with both exporters: shaped like real exports
(YOLOv5-style and end-to-end detectors, a CTC text recognizer, an embedding model ending in F.normalize, a
variable-size classifier, a text-direction classifier whose labels are numbers). Random weights unless said
otherwise; the YOLOv8-style detector is the shipped, trained ``shapes_detector``."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from functools import cache

import onnx
import torch
import torch.nn.functional as F
from torch import nn


def relu_block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.ReLU())


class YoloAnchorsFirst(nn.Module):
    """YOLOv5-style head: N x anchors x (5 + C), sigmoid objectness and class scores, boxes in input pixels."""

    def __init__(self, classes: int = 3):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8, 2), relu_block(8, 16, 2))
        self.head = nn.Conv2d(16, 5 + classes, 1)
        nn.init.constant_(self.head.bias[4:], 2.0)  # confident enough that detections survive the threshold

    def forward(self, x):
        raw = self.head(self.features(x)).flatten(2).transpose(1, 2)  # N x anchors x (5 + C)
        centres = raw[..., :2].sigmoid() * x.shape[-1]
        sizes = raw[..., 2:4].sigmoid() * 16 + 4
        return torch.cat([centres, sizes, raw[..., 4:].sigmoid()], 2)


class BoxesAndScores(nn.Module):
    """End-to-end head (YOLOv10-style): the top K anchors as N x K x 6 (x1, y1, x2, y2, score, class)."""

    def __init__(self, classes: int = 3, keep: int = 10):
        super().__init__()
        self.keep = keep
        self.features = nn.Sequential(relu_block(3, 8, 2), relu_block(8, 16, 2))
        self.head = nn.Conv2d(16, 4 + classes, 1)

    def forward(self, x):
        raw = self.head(self.features(x)).flatten(2).transpose(1, 2)  # N x anchors x (4 + C)
        scores, labels = raw[..., 4:].sigmoid().max(2)
        top, index = scores.topk(self.keep, dim=1)
        boxes = raw[..., :4].sigmoid() * x.shape[-1]
        boxes = torch.cat([boxes[..., :2], boxes[..., :2] + boxes[..., 2:] / 2 + 2], 2)
        chosen = boxes.gather(1, index[..., None].expand(-1, -1, 4))
        return torch.cat([chosen, top[..., None], labels.gather(1, index)[..., None].float()], 2)


class CTCRecognizer(nn.Module):
    """CRNN-style without the recurrence: conv features collapsed over height, one class per column, log-softmax."""

    def __init__(self, classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8), nn.MaxPool2d(2), relu_block(8, 16), nn.MaxPool2d(2))
        self.classify = nn.Linear(16, classes)

    def forward(self, x):
        columns = self.features(x).mean(2).transpose(1, 2)  # N x T x 16
        return F.log_softmax(self.classify(columns), dim=2)


class CRNN(nn.Module):
    """A CRNN text recognizer (Shi, Bai & Yao 2015): conv features collapsed over height, a bidirectional LSTM
    over the columns, one class per column, log-softmax for CTC."""

    def __init__(self, classes: int = 6):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8), nn.MaxPool2d(2), relu_block(8, 16), nn.MaxPool2d(2))
        self.recurrence = nn.LSTM(16, 12, bidirectional=True, batch_first=True)
        self.classify = nn.Linear(24, classes)

    def forward(self, x):
        columns = self.features(x).mean(2).transpose(1, 2)  # N x T x 16
        return F.log_softmax(self.classify(self.recurrence(columns)[0]), dim=2)


class Embedder(nn.Module):
    """A face-recognition-style embedder: conv features, a projection, and F.normalize at the end."""

    def __init__(self, dimensions: int = 16):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8, 2), relu_block(8, 16, 2))
        self.project = nn.Linear(16, dimensions)

    def forward(self, x):
        return F.normalize(self.project(self.features(x).mean((2, 3))), dim=1)


class VariableSizeClassifier(nn.Module):
    """Any H x W (adaptive pooling), as most real exports are."""

    def __init__(self, classes: int = 2):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8), nn.MaxPool2d(2), relu_block(8, 16), nn.MaxPool2d(2), relu_block(16, 16))
        self.classify = nn.Linear(16, classes)

    def forward(self, x):
        return self.classify(self.features(x).mean((2, 3)))


class TinySegmenter(nn.Module):
    """A segmenter: N x 3 x H x W class maps (a fully convolutional network, no pooling)."""

    def __init__(self):
        super().__init__()
        self.encode = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.classify = nn.Conv2d(8, 3, 1)

    def forward(self, x):
        return self.classify(self.encode(x))


class YoloV8Branches(nn.Module):
    """A YOLOv8-style head with separate class and box branches, the box branch (with a DFL-like integral over 8
    bins) computed last, as Ultralytics' Detect module orders them: N x (4 + C) x anchors, sigmoid class scores."""

    def __init__(self, classes: int = 3, bins: int = 8):
        super().__init__()
        self.bins = bins
        self.features = nn.Sequential(relu_block(3, 8, 2), relu_block(8, 16, 2))
        self.classes = nn.Sequential(relu_block(16, 16), nn.Conv2d(16, classes, 1))
        self.boxes = nn.Sequential(relu_block(16, 16), nn.Conv2d(16, 4 * bins, 1))
        self.dfl = nn.Conv2d(bins, 1, 1, bias=False)
        with torch.no_grad():
            self.dfl.weight.copy_(torch.arange(bins, dtype=torch.float32).view(1, bins, 1, 1))
            self.classes[1].bias.fill_(2.0)  # confident enough that detections survive the threshold

    def forward(self, x):
        features = self.features(x)
        scores = self.classes(features).flatten(2).sigmoid()  # N x C x A
        raw = self.boxes(features).flatten(2)  # N x 4*bins x A
        anchors = raw.shape[-1]
        distribution = raw.view(raw.shape[0], 4, self.bins, anchors).transpose(2, 1).softmax(1)  # N x bins x 4 x A
        distances = self.dfl(distribution).view(raw.shape[0], 4, anchors)  # the expected distance per side
        side = int(anchors**0.5)
        grid = torch.arange(side, dtype=x.dtype) * 4 + 2
        centre_x, centre_y = grid.repeat(side), grid.repeat_interleave(side)
        x1, y1 = centre_x - distances[:, 0], centre_y - distances[:, 1]
        x2, y2 = centre_x + distances[:, 2], centre_y + distances[:, 3]
        boxes = torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], 1)
        return torch.cat([boxes, scores], 1)


class AttentionRecognizer(nn.Module):
    """A text recognizer with a self-attention block over the columns (as PP-OCRv4's SVTR neck): conv features
    collapsed over height, attention weights N x heads x T x T (4-D, but no image map), one class per column."""

    def __init__(self, classes: int = 6, heads: int = 2, width: int = 16):
        super().__init__()
        self.heads, self.width = heads, width
        self.features = nn.Sequential(relu_block(3, 8), nn.MaxPool2d(2), relu_block(8, width), nn.MaxPool2d(2))
        self.query, self.key, self.value = (nn.Linear(width, width) for _ in range(3))
        self.classify = nn.Linear(width, classes)

    def forward(self, x):
        columns = self.features(x).mean(2).transpose(1, 2)  # N x T x width
        n, steps, _ = columns.shape
        split = lambda t: t.view(n, steps, self.heads, self.width // self.heads).transpose(1, 2)  # noqa: E731
        query, key, value = split(self.query(columns)), split(self.key(columns)), split(self.value(columns))
        attention = (query @ key.transpose(2, 3) / (self.width // self.heads) ** 0.5).softmax(-1)  # N x heads x T x T
        mixed = (attention @ value).transpose(1, 2).reshape(n, steps, self.width)
        return F.log_softmax(self.classify(columns + mixed), dim=2)


class TextDetector(nn.Module):
    """A DB-style text detector (Liao et al. 2020, as PaddleOCR's): features at a quarter of the input's size,
    upsampled back by transposed convolutions, one sigmoid text probability map (N x 1 x H x W). Random weights,
    plus the pixels' brightness, so that "text" (bright areas) is predicted on part of every picture."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(relu_block(3, 8, 2), relu_block(8, 16, 2))
        self.head = nn.Sequential(nn.Conv2d(16, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 2, 2), nn.ReLU(), nn.ConvTranspose2d(4, 1, 2, 2))

    def forward(self, x):
        return torch.sigmoid(self.head(self.features(x)) + 6 * (x.mean(1, keepdim=True) - 0.5))


MODELS = {
    "segmenter": (TinySegmenter, (1, 3, 16, 16), {}),
    "yolo_anchors_first": (YoloAnchorsFirst, (1, 3, 32, 32), {}),
    "boxes_and_scores": (BoxesAndScores, (1, 3, 32, 32), {}),
    "ctc": (CTCRecognizer, (1, 3, 16, 48), {}),
    "crnn": (CRNN, (1, 3, 16, 48), {}),
    "embedder": (Embedder, (1, 3, 32, 32), {}),
    "variable_size": (VariableSizeClassifier, (1, 3, 32, 64), {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch"}}),
    "yolo_v8_branches": (YoloV8Branches, (1, 3, 32, 32), {}),
    "attention_recognizer": (AttentionRecognizer, (1, 3, 16, 48), {}),
    "text_detector": (TextDetector, (1, 3, 32, 32), {"x": {0: "batch", 2: "height", 3: "width"}, "y": {0: "batch", 2: "height", 3: "width"}}),
}


def paddle2onnx_style(data: bytes) -> bytes:
    """Name every dynamic axis ``p2o.DynamicDimension.K`` and clear the producer, as paddle2onnx exports look."""
    model = onnx.load_from_string(data)
    model.producer_name, model.producer_version = "", ""
    count = 0
    for value in [*model.graph.input, *model.graph.output]:
        for dim in value.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = f"p2o.DynamicDimension.{count}"
                count += 1
    return model.SerializeToString()


@cache
def export_task_model(name: str, exporter: str = "torchscript", metadata: tuple[tuple[str, str], ...] = ()) -> bytes:
    """ONNX bytes of task model ``name`` (seeded random weights), batch axis dynamic (and H, W for variable_size)."""
    cls, shape, dynamic = MODELS[name]
    torch.manual_seed(5)
    module = cls().eval()
    buffer = io.BytesIO()
    axes = dynamic or {"x": {0: "batch"}, "y": {0: "batch"}}
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1, max=64)
            shapes = {
                "x": {0: batch, **({2: torch.export.Dim("height", min=8, max=512), 3: torch.export.Dim("width", min=8, max=512)} if 2 in axes["x"] else {})}
            }
            torch.onnx.export(module, (torch.rand(*shape),), buffer, dynamo=True, input_names=["x"], output_names=["y"], dynamic_shapes=shapes)
        else:
            torch.onnx.export(module, (torch.rand(*shape),), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"], dynamic_axes=axes)
    model = onnx.load_from_string(buffer.getvalue())
    for key, value in metadata:
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    return model.SerializeToString()


class TimeMajorCRNN(CRNN):
    """A CRNN whose output is time-major, T x N x C, as many CTC recognizers export it (exported with a fixed batch
    of 1, its declared output shape says little)."""

    def forward(self, x):
        return super().forward(x).transpose(0, 1)


def export_fixed_batch(module: nn.Module, shape: tuple[int, ...], output_shape: list | None = None) -> bytes:
    """ONNX bytes of ``module`` with every axis fixed (batch 1), optionally declaring a wrong ``output_shape``."""
    torch.manual_seed(5)
    module = module.eval()
    buffer = io.BytesIO()
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (torch.rand(*shape),), buffer, dynamo=False, opset_version=17, input_names=["x"], output_names=["y"])
    model = onnx.load_from_string(buffer.getvalue())
    if output_shape is not None:
        declared = model.graph.output[0].type.tensor_type.shape
        declared.Clear()
        for size in output_shape:
            declared.dim.add().dim_value = size
    return model.SerializeToString()


def with_loop(data: bytes) -> bytes:
    """The classifier ``data`` with its scores passed through an ONNX ``Loop`` (two trips of Identity): onnxruntime runs
    it and gives the same scores; no torch graph can hold it, so viz-server runs it forward-only."""
    from onnx import TensorProto, helper

    model = onnx.load_from_string(data)
    graph = model.graph
    scores = graph.output[0].name
    for node in graph.node:
        node.output[:] = [f"{name}_before_loop" if name == scores else name for name in node.output]
    body = helper.make_graph(
        [helper.make_node("Identity", ["condition_in"], ["condition_out"]), helper.make_node("Identity", ["carried_in"], ["carried_out"])],
        "trip",
        [
            helper.make_tensor_value_info("trip", TensorProto.INT64, []),
            helper.make_tensor_value_info("condition_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("carried_in", TensorProto.FLOAT, None),
        ],
        [helper.make_tensor_value_info("condition_out", TensorProto.BOOL, []), helper.make_tensor_value_info("carried_out", TensorProto.FLOAT, None)],
    )
    graph.initializer.extend([helper.make_tensor("trips", TensorProto.INT64, [], [2]), helper.make_tensor("keep_going", TensorProto.BOOL, [], [True])])
    graph.node.append(helper.make_node("Loop", ["trips", "keep_going", f"{scores}_before_loop"], [scores], name="passes", body=body))
    return model.SerializeToString()
