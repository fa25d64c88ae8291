"""A converter for ThresholdedRelu (``y = x if x > alpha else 0``), an ONNX op onnx2torch does not convert."""

import torch
from onnx2torch.onnx_graph import OnnxGraph
from onnx2torch.onnx_node import OnnxNode
from onnx2torch.utils.common import OnnxMapping, OnnxToTorchModule, OperationConverterResult

from viz_server import hookimpl
from viz_server.model.convert import Converter


class ThresholdedRelu(torch.nn.Module, OnnxToTorchModule):
    def __init__(self, alpha: float):
        super().__init__()
        self.alpha = alpha

    def forward(self, x):
        return torch.where(x > self.alpha, x, torch.zeros_like(x))


def convert_thresholded_relu(node: OnnxNode, graph: OnnxGraph) -> OperationConverterResult:
    module = ThresholdedRelu(float(node.attributes.get("alpha", 1.0)))
    return OperationConverterResult(torch_module=module, onnx_mapping=OnnxMapping(node.input_values[:1], node.output_values))


@hookimpl
def register_converters():
    return [Converter("ThresholdedRelu", 10, convert_thresholded_relu)]
