"""Embedding models (face recognition, image retrieval): a feature vector per image, usually L2-normalized.

Such a model is explained by what it compares: a target ``similarity`` (the default) is the cosine
similarity of each image's embedding to a second image's (``--second-image``), the quantity retrieval and
verification threshold; ``dim:K`` is one embedding dimension. The decoder recognises an output normalized
by its L2 norm at the end of the graph (how ``F.normalize`` exports) or the metadata ``task: embedding``.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server.errors import UserError
from viz_server.objectives import Objective, refuse_target
from viz_server.tasks import OutputDecoder, OutputInfo

NORM_OPS = ("ReduceL2", "LpNormalization", "Sqrt")
LOOK_BACK = 6


def ends_in_l2_normalization(output: OutputInfo) -> bool:
    """The output is computed by a Div (or LpNormalization) whose divisor comes from an L2 norm a few nodes back."""
    if output.graph is None or not output.graph.output:
        return False
    producers = {name: node for node in output.graph.node for name in node.output}
    final = producers.get(output.graph.output[0].name)
    if final is None:
        return False
    if final.op_type == "LpNormalization":
        return True
    if final.op_type != "Div" or len(final.input) < 2:
        return False
    frontier, seen = [final.input[1]], 0
    while frontier and seen < LOOK_BACK:
        node = producers.get(frontier.pop(0))
        seen += 1
        if node is None:
            continue
        if node.op_type in NORM_OPS:
            return True
        frontier.extend(node.input)
    return False


class NormalizedEmbedding(OutputDecoder):
    name = "normalized_embedding"
    task = "embedding"
    summary = "A feature vector per image (N x D), compared by cosine similarity."
    targets = "similarity (to the second image; the default), or dim:K (one embedding dimension)"
    priority = 10

    def recognizes(self, output: OutputInfo) -> bool:
        declared = str(output.metadata.get("task", "")).lower() == "embedding"
        return len(output.shape) == 2 and (declared or ends_in_l2_normalization(output))

    def class_count(self, output):
        return None

    def decode(self, outputs, spec):
        vectors = np.asarray(outputs, np.float64)
        return [{"norm": round(float(np.linalg.norm(v)), 6), "dimensions": int(v.size)} for v in vectors]

    def suggested_targets(self, spec, output_shape):
        dimensions = output_shape[1] if len(output_shape) > 1 and isinstance(output_shape[1], int) else 0
        return [("similarity", "similarity to the second image"), *((f"dim:{k}", f"dimension {k}") for k in range(min(dimensions, 8)))]

    def objective(self, target, ctx, region=""):
        if str(region or "").strip():
            raise UserError("a region applies to dense outputs; an embedding is explained by similarity or dim:K.")
        text = str(target).strip().lower()
        if text.startswith("dim:"):
            try:
                return DimensionObjective(target, int(text[4:]))
            except ValueError:
                raise refuse_target(target, "embedding", "similarity or dim:K") from None
        if text not in ("", "top1", "top-1", "predicted", "similarity"):
            raise refuse_target(target, "embedding", "similarity or dim:K")
        if ctx.second_image is None:
            raise UserError(
                "an embedding model is explained by its similarity to a second image; give one with --second-image "
                "(or pick a second image in the form), or use target dim:K."
            )
        reference = ctx.model.predict(ctx.second_image.detach().cpu().numpy())[0]
        return SimilarityObjective(target, torch.from_numpy(reference.astype(np.float32)))


class SimilarityObjective(Objective):
    """Cosine similarity to a fixed reference embedding (nothing to choose per image)."""

    measure = "similarity to the second image, (1 + cosine) / 2"

    def __init__(self, target: str, reference: torch.Tensor):
        super().__init__(target)
        self.reference = reference / reference.norm().clamp(min=1e-12)

    def choose(self, outputs):
        return [float(c) for c in torch.nn.functional.cosine_similarity(outputs, self.reference[None].to(outputs), dim=1)]

    def selected(self, outputs, choices):
        return torch.nn.functional.cosine_similarity(outputs, self.reference[None].to(outputs), dim=1)

    def probability(self, outputs, choices):
        vectors = np.asarray(outputs, np.float64)
        reference = self.reference.numpy().astype(np.float64)
        cosine = vectors @ reference / np.maximum(np.linalg.norm(vectors, axis=1), 1e-12)
        return np.clip((cosine + 1) / 2, 0.0, 1.0)

    def describe(self, choice):
        return f"similarity to the second image (cosine {choice:.3f})"

    def details(self, choice):
        return {"cosine_similarity": round(choice, 6)}

    def predicted(self, outputs):
        return [f"cosine {value:.3f} to the second image" for value in (self.probability(outputs, []) * 2 - 1)]


class DimensionObjective(Objective):
    measure = "the dimension's value through a sigmoid"

    def __init__(self, target: str, dimension: int):
        super().__init__(target)
        self.dimension = dimension

    def choose(self, outputs):
        if not 0 <= self.dimension < outputs.shape[1]:
            raise UserError(f"dim:{self.dimension} is outside the embedding's {outputs.shape[1]} dimensions.")
        return [self.dimension] * len(outputs)

    def selected(self, outputs, choices):
        return outputs[:, self.dimension]

    def probability(self, outputs, choices):
        return 1 / (1 + np.exp(-np.asarray(outputs, np.float64)[:, self.dimension]))

    def describe(self, choice):
        return f"embedding dimension {choice}"
