"""t-SNE of activation vectors: scikit-learn's TSNE (default settings) against openTSNE (FFT-accelerated
interpolation, Linderman et al. 2019), same vectors, same run. Quality is checked too, so a faster embedding
that separates the classes worse does not win: leave-one-out k-NN accuracy in each 2-D embedding.

The vectors are real: the shipped shapes model's pooled activations at its last spatial layer for ``--count``
generated pictures.

Run: ``python -m benchmarks.tsne [--count 2000] [--repeats 3]`` (openTSNE comes with the ``bench`` extra).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from benchmarks.common import software_line
from viz_server.model.pipeline import load_model
from viz_server_models import shapes, shipped_models
from viz_server_plugins.embeddings import knn_accuracy, pooled_activations


def activation_vectors(count: int) -> tuple[np.ndarray, np.ndarray]:
    import torch

    model = load_model(shipped_models()["shapes_cnn"])
    dataset = shapes.make_dataset(count, seed=7)
    images = torch.from_numpy(model.spec.unit_to_model(dataset.images.astype(np.float32) / 255.0))
    layer = model.layers.default_cam_layer
    return pooled_activations(model, images, [layer])[layer], dataset.shape_labels


def sklearn_tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    from sklearn.manifold import TSNE

    return TSNE(n_components=2, random_state=seed).fit_transform(vectors)


def open_tsne(vectors: np.ndarray, seed: int) -> np.ndarray:
    from openTSNE import TSNE

    return np.asarray(TSNE(n_components=2, random_state=seed, n_jobs=-1).fit(vectors))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(software_line("scikit-learn", "openTSNE"))
    vectors, labels = activation_vectors(args.count)
    print(f"{len(vectors)} vectors of {vectors.shape[1]} dimensions, median of {args.repeats}\n")
    print("| implementation | seconds | k-NN accuracy (5-NN, leave-one-out) in 2-D |\n|---|---|---|")
    results = {}
    for name, embed in (("scikit-learn TSNE", sklearn_tsne), ("openTSNE", open_tsne)):
        timings, accuracies = [], []
        for seed in range(args.repeats):
            started = time.perf_counter()
            points = embed(vectors, seed)
            timings.append(time.perf_counter() - started)
            accuracies.append(knn_accuracy(points, labels, 5))
        results[name] = statistics.median(timings)
        print(f"| {name} | {results[name]:.2f} | {statistics.median(accuracies):.3f} |", flush=True)
    print(f"\nopenTSNE / scikit-learn time: {results['openTSNE'] / results['scikit-learn TSNE']:.2f}")


if __name__ == "__main__":
    main()
