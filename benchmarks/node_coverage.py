"""ONNX's own node tests (the cases ``onnx.backend.test.case`` generates, no download) for the ops image models
use, run through our normalize and convert stages, and through onnx2torch alone.

Each case ends as: ``passed`` (the torch graph reproduces ONNX's expected outputs), ``refused`` (conversion, or the
first run, raises: the pipeline would refuse the model with a sentence), ``wrong`` (it converts and runs, but the
outputs differ: silently wrong, the one outcome never allowed for us), or ``not applicable`` (the case's inputs
are not float tensors: integer, string or boolean data no image model feeds; or an op outside the image list).

Run: ``python -m benchmarks.node_coverage [--write docs/op-coverage.md]``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cache

import numpy as np
import onnx
import onnx.numpy_helper

IMAGE_OPS = frozenset(
    """Abs Add And ArgMax ArgMin AveragePool BatchNormalization Cast CastLike Ceil Celu Clip Concat Constant ConstantOfShape Conv
    ConvInteger ConvTranspose CumSum DepthToSpace DequantizeLinear Div Dropout DynamicQuantizeLinear Einsum Elu Equal Erf Exp Expand
    Flatten Floor GRU Gather GatherElements Gelu Gemm GridSample GlobalAveragePool GlobalMaxPool Greater GreaterOrEqual GroupNormalization
    HardSigmoid HardSwish Identity InstanceNormalization LRN LSTM LayerNormalization LeakyRelu Less LessOrEqual Log LogSoftmax LpPool
    MatMul MatMulInteger Max MaxPool Mean Min Mish Mul Neg Not Or PRelu Pad Pow QLinearConv QLinearMatMul QuantizeLinear RNN Range
    Reciprocal ReduceL1 ReduceL2 ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu
    Reshape Resize Round Selu Shape Sigmoid Sign Slice Softmax Softplus Softsign SpaceToDepth Split Sqrt Squeeze Sub Sum Tanh
    ThresholdedRelu Tile TopK Transpose Unsqueeze Upsample Where""".split()
)
FLOATS = (np.float32, np.float64, np.float16)


@dataclass
class Outcome:
    case: str
    op: str
    ours: str  # passed | refused | wrong | not applicable
    onnx2torch: str
    detail: str = ""


@cache
def cases():
    from onnx.backend.test.case.node import collect_testcases

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return [case for case in collect_testcases(None) if case.model is not None and case.model.graph.node]


def op_of(case) -> str:
    return (
        case.model.graph.node[-1].op_type
        if len(case.model.graph.node) == 1
        else next((node.op_type for node in case.model.graph.node if node.op_type != "Constant"), case.model.graph.node[0].op_type)
    )


def applicable(case) -> bool:
    """Every op of the case is one image models use, and its first input is float data (quantized ops aside)."""
    ops = {node.op_type for node in case.model.graph.node} - {"Constant"}
    if not ops or not ops <= IMAGE_OPS or not case.data_sets or not case.model.graph.input:
        return False
    inputs, _outputs = case.data_sets[0]
    quantized = op_of(case) in ("QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "ConvInteger", "MatMulInteger", "QLinearConv", "QLinearMatMul")
    if not all(isinstance(value, np.ndarray) for value in inputs):
        return False  # float8, int4, int2 or float4 data, held as TensorProto: element types no image model feeds
    return quantized or all(value.dtype.type in FLOATS for value in inputs[:1])


def frozen(model: onnx.ModelProto, inputs: list[np.ndarray]) -> onnx.ModelProto:
    """The case with every input after the first turned into an initializer holding the case's value: in an image
    model, weights, shapes, axes, scales and pads are constants, and only the picture flows in."""
    from onnx import numpy_helper

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    graph = copy.graph
    for proto, value in list(zip(graph.input, inputs))[1:]:
        graph.initializer.append(numpy_helper.from_array(np.asarray(value), proto.name))
    kept = [proto for proto in graph.input if proto.name not in {i.name for i in graph.initializer}]
    del graph.input[:]
    graph.input.extend(kept)
    return copy


def prepared(model: onnx.ModelProto) -> onnx.ModelProto:
    """Our normalize passes that keep the graph's meaning and outputs (the pipeline also strips a final Softmax and
    drops secondary outputs on purpose; a node test checks the op itself)."""
    from viz_server.model import normalize

    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    for step in (normalize.name_nodes, normalize.isolate_outputs, normalize.fold_constants, normalize.infer_shapes):
        step(copy)
    return copy


def run(module, inputs: list[np.ndarray]):
    import torch

    with torch.no_grad():
        outputs = module(*[torch.from_numpy(np.array(value)) for value in inputs])
    outputs = outputs if isinstance(outputs, (tuple, list)) else (outputs,)
    return [output.detach().numpy() if hasattr(output, "detach") else np.asarray(output) for output in outputs]


def compare(got: list[np.ndarray], expected: list[np.ndarray]) -> str:
    if len(got) < len(expected):
        return f"{len(got)} outputs for {len(expected)}"
    for value, reference in zip(got, expected):
        if isinstance(reference, onnx.TensorProto):
            reference = onnx.numpy_helper.to_array(reference)
        value, reference = np.asarray(value), np.asarray(reference)
        if value.shape != reference.shape:
            return f"shape {list(value.shape)} for {list(reference.shape)}"
        if reference.dtype.kind in "fc":
            tolerance = 1e-2 if reference.dtype == np.float16 else 1e-4
            if not np.allclose(value.astype(np.float64), reference.astype(np.float64), rtol=tolerance, atol=tolerance, equal_nan=True):
                return f"max difference {float(np.nanmax(np.abs(value.astype(np.float64) - reference))):.3g}"
        elif not np.array_equal(value, reference):
            return "different values"
    return ""


def judge(convert, model: onnx.ModelProto, data_sets) -> tuple[str, str]:
    for inputs, expected in data_sets:
        try:
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                warnings.simplefilter("ignore")
                got = run(convert(frozen(model, inputs)), inputs[:1])
        except Exception as exc:  # noqa: BLE001 - any failure to convert or run is a refusal the pipeline turns into a sentence
            return "refused", f"{type(exc).__name__}: {str(exc)[:160]}"
        problem = compare(got, expected)
        if problem:
            return "wrong", problem
    return "passed", ""


def ours(model: onnx.ModelProto):
    from viz_server.model.convert import convert

    module, _ = convert(prepared(model))
    return module


def onnx2torch_alone(model: onnx.ModelProto):
    import onnx2torch

    return onnx2torch.convert(model).eval()


def outcomes() -> list[Outcome]:
    found = []
    for case in cases():
        if not applicable(case):
            found.append(Outcome(case.name, op_of(case), "not applicable", "not applicable"))
            continue
        mine, detail = judge(ours, case.model, case.data_sets)
        theirs, _ = judge(onnx2torch_alone, case.model, case.data_sets)
        found.append(Outcome(case.name, op_of(case), mine, theirs, detail))
    return found


def table(results: list[Outcome]) -> str:
    considered = [result for result in results if result.ours != "not applicable"]
    lines = ["| | passed | refused | silently wrong |", "|---|---|---|---|"]
    for who in ("ours", "onnx2torch"):
        counts = Counter(getattr(result, who) for result in considered)
        lines.append(
            f"| {'viz-server (normalize + convert)' if who == 'ours' else 'onnx2torch alone'} | {counts['passed']} | {counts['refused']} | {counts['wrong']} |"
        )
    lines += [
        "",
        "| op | cases | passed | refused (ours) | silently wrong (ours) | passed (onnx2torch alone) | wrong (onnx2torch alone) |",
        "|---|---|---|---|---|---|---|",
    ]
    for op in sorted({result.op for result in considered}):
        rows = [result for result in considered if result.op == op]
        count = Counter(result.ours for result in rows)
        theirs = Counter(result.onnx2torch for result in rows)
        lines.append(f"| {op} | {len(rows)} | {count['passed']} | {count['refused']} | {count['wrong']} | {theirs['passed']} | {theirs['wrong']} |")
    refused = [result for result in considered if result.ours == "refused"]
    lines += ["", "Refused cases (the pipeline refuses such a model with one sentence):", ""]
    lines += [f"- `{result.case}`: {result.detail}" for result in refused]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--write", help="write the table to this Markdown file")
    args = parser.parse_args()
    results = outcomes()
    text = table(results)
    print(text)
    wrong = [result for result in results if result.ours == "wrong"]
    for result in wrong:
        print(f"WRONG {result.case}: {result.detail}")
    if args.write:
        from pathlib import Path

        header = (
            "# Op coverage: ONNX's node tests\n\nGenerated by `python -m benchmarks.node_coverage --write docs/op-coverage.md` from the cases "
            "`onnx.backend.test.case` generates, for the ops image models use (see the module's docstring). `tests/model/test_node_cases.py` "
            "enforces zero silently wrong cases.\n\n"
        )
        Path(args.write).write_text(header + text + "\n")


if __name__ == "__main__":
    main()
