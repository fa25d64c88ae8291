"""Embeddings of a layer's activations over an image set (lecture notes: "dimensionality reduction ... PCA ...
t-SNE"; van der Maaten & Hinton 2008).

Each image's activation at a layer is pooled to one vector (spatial mean for maps), the vectors are reduced
to 2-D with PCA and/or t-SNE (scikit-learn), and for labeled sets the separation of the classes is measured
per layer: silhouette score in the 2-D embedding, and leave-one-out k-NN accuracy in the embedding and in the
full feature space. Classes that separate better as the layers deepen are what a working classifier shows.
"""

from __future__ import annotations

import numpy as np
import torch

from viz_server import hookimpl
from viz_server.errors import UserError
from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result, Technique
from viz_server_plugins.toolkit.layers import default_layers

BATCH = 64


def pooled_activations(model, images: torch.Tensor, layers: list[str]) -> dict[str, np.ndarray]:
    """layer -> N x D: one onnxruntime pass per batch for all layers (forward-only, so no torch graph;
    see benchmarks/sweeps.py), spatial maps mean-pooled."""
    batch = images.detach().cpu().numpy()
    parts: dict[str, list[np.ndarray]] = {name: [] for name in layers}
    for start in range(0, len(batch), BATCH):
        for name, values in model.predict_layers(batch[start : start + BATCH], layers).items():
            if values.ndim == 4:
                values = values.mean(axis=(2, 3))
            parts[name].append(values.reshape(len(values), -1).astype(np.float32))
    return {name: np.concatenate(chunks) for name, chunks in parts.items()}


def knn_accuracy(features: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Leave-one-out k-nearest-neighbour accuracy (Euclidean)."""
    from sklearn.model_selection import LeaveOneOut, cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    k = max(1, min(k, len(features) - 1))
    return float(cross_val_score(KNeighborsClassifier(n_neighbors=k), features, labels, cv=LeaveOneOut()).mean())


def reduce(features: np.ndarray, method: str, perplexity: float, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA
    from sklearn.manifold import TSNE
    from sklearn.preprocessing import StandardScaler

    scaled = StandardScaler().fit_transform(features)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(scaled)
    if method == "umap":
        try:
            import umap
        except ImportError:
            raise UserError("UMAP needs the umap-learn package (pip install umap-learn); or use method=pca or tsne.") from None
        return umap.UMAP(n_components=2, random_state=seed).fit_transform(scaled)
    perplexity = min(perplexity, max(1.0, (len(features) - 1) / 3))
    return TSNE(n_components=2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(scaled)


def scatter_png(points: np.ndarray, labels: list[str], title: str) -> bytes:
    pyplot = plotting()

    figure, axis = pyplot.subplots(figsize=(4.0, 3.6), dpi=100)
    for label in sorted(set(labels)):
        chosen = np.array([item == label for item in labels])
        axis.scatter(points[chosen, 0], points[chosen, 1], s=12, label=label)
    axis.set_title(title, fontsize=8)
    axis.set_xticks([])
    axis.set_yticks([])
    if len(set(labels)) <= 12:
        axis.legend(fontsize=7, markerscale=1.5)
    return figure_png(figure)


class Embeddings(Technique):
    name = "embeddings"
    title = "Embeddings (PCA / t-SNE)"
    family = "network"
    suites = ("network",)
    expected_cost = 4.0
    runs_on = "runtime"  # forward passes on onnxruntime only
    summary = "A layer's activations over an image set reduced to 2-D, with how well the classes separate, layer by layer."
    params = (
        Param("layers", "str", "", "Comma-separated layers (ONNX nodes); empty = up to 4 spatial layers plus the scores."),
        Param("method", "choice", "both", "PCA, t-SNE, both, or UMAP (needs the umap-learn package).", choices=("pca", "tsne", "both", "umap")),
        Param("perplexity", "float", 30.0, "t-SNE perplexity (capped at (N - 1) / 3).", minimum=2.0, maximum=100.0),
        Param("knn", "int", 5, "k of the k-NN accuracy.", minimum=1, maximum=50),
    )
    inputs = ("image_set",)

    def run(self, ctx: Context, params: dict) -> Result:
        model = ctx.model
        if len(ctx.images) < 4:
            raise UserError("an embedding needs at least 4 images; give a labeled image set.")
        names = [n.strip() for n in params["layers"].split(",") if n.strip()] or default_layers(model) + [model.layers.layers[-1].name]
        for name in names:
            model.layer(name)
        labels = [label or "unlabeled" for label in ctx.image_labels] or ["unlabeled"] * len(ctx.images)
        counts = {label: labels.count(label) for label in set(labels)}
        labeled = len(counts) > 1 and min(counts.values()) >= 2  # silhouette and leave-one-out k-NN need two of each class
        features = pooled_activations(model, ctx.images, names)
        methods = ["pca", "tsne"] if params["method"] == "both" else [params["method"]]
        result = Result(
            caveats=[
                "An embedding keeps neighbourhoods, not distances: t-SNE clusters' sizes and gaps carry "
                "no meaning (Wattenberg et al. 2016); compare layers by the separation figures."
            ]
        )
        rows = [["layer", "dimensions"] + [f"silhouette ({m})" for m in methods] + [f"k-NN accuracy ({m})" for m in methods] + ["k-NN accuracy (full)"]]
        label_array = np.asarray(labels)
        total = len(names) * len(methods)
        for position, name in enumerate(names):
            vectors = features[name]
            key = f"features_{position}"
            result.arrays[key] = vectors.astype(np.float32)
            silhouettes, accuracies = [], []
            for step, method in enumerate(methods):
                points = reduce(vectors, method, params["perplexity"], ctx.seed)
                result.arrays[f"{method}_{position}"] = points.astype(np.float32)
                title = f"{method.upper()} of {name}"
                if labeled:
                    from sklearn.metrics import silhouette_score

                    silhouettes.append(round(float(silhouette_score(points, label_array)), 4))
                    accuracies.append(round(knn_accuracy(points, label_array, params["knn"]), 4))
                result.artifacts.append(
                    Artifact(f"{method}_{position}.png", title, kind="plot", data=scatter_png(points, labels, title), array=f"{method}_{position}", group=name)
                )
                result.artifacts.append(
                    Artifact(
                        f"{method}_{position}.points",
                        f"{title} (hover a point for its image)",
                        kind="points",
                        rows=[["x", "y", "label", "image"]]
                        + [[round(float(x), 4), round(float(y), 4), label, index] for index, ((x, y), label) in enumerate(zip(points, labels))],
                        array=f"{method}_{position}",
                        group=name,
                    )
                )
                ctx.progress(position * len(methods) + step + 1, total, f"{name}: {method}")
            full = round(knn_accuracy(vectors, label_array, params["knn"]), 4) if labeled else None
            rows.append([name, int(vectors.shape[1])] + (silhouettes or [None] * len(methods)) + (accuracies or [None] * len(methods)) + [full])
        result.artifacts.append(Artifact("separation.csv", "class separation per layer", kind="table", rows=rows, group="separation"))
        result.metrics = {
            "layers": names,
            "images": len(ctx.images),
            "classes": sorted(set(labels)),
            "separation": [dict(zip(rows[0], row)) for row in rows[1:]],
        }
        if len(counts) <= 1:
            result.caveats.append("The set has no class labels, so no separation figures were computed.")
        elif not labeled:
            alone = sorted(label for label, count in counts.items() if count < 2)
            result.caveats.append(
                f"Separation figures need at least two images of every class; {', '.join(alone[:5])} {'has' if len(alone) == 1 else 'have'} one, so none were computed."
            )
        return result


@hookimpl
def register_techniques():
    return [Embeddings()]
