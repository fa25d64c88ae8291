"""Deletion and insertion curves (Petsiuk, Das & Saenko 2018, "RISE").

Deletion: replace the most important pixels first (by the map) with the image's mean colour and follow the
target probability down; a faithful map makes it fall fast (low area under the curve). Insertion: start from
a heavily blurred image and restore the most important pixels first; a faithful map makes the probability
rise fast (high area). Forward-only, batched, on the onnxruntime session.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from viz_server.rendering import figure_png
from viz_server.rendering import pyplot as plotting
from viz_server_plugins.toolkit.copy_scores import CopyScores
from viz_server_plugins.toolkit.degenerate import flat_curves


@dataclass
class Curves:
    fractions: np.ndarray  # S
    deletion: np.ndarray  # N x S target probabilities
    insertion: np.ndarray  # N x S

    def metrics(self, usable: list[bool] | None = None) -> dict:
        """Areas under the curves per image; None for a map that cannot support a conclusion (its pixel order is
        arbitrary, so its curves measure nothing) and for a curve that never moves (the target does not change
        when pixels go, so the area says nothing of the map: "cannot judge")."""
        usable = usable if usable is not None else [True] * len(self.deletion)
        deletion_auc = np.trapezoid(self.deletion, self.fractions, axis=1)
        insertion_auc = np.trapezoid(self.insertion, self.fractions, axis=1)
        flat = {"deletion": flat_curves(self.deletion), "insertion": flat_curves(self.insertion)}
        found = {
            f"{name}_auc": [round(float(v), 4) if ok and not still else None for v, ok, still in zip(areas, usable, flat[name])]
            for name, areas in (("deletion", deletion_auc), ("insertion", insertion_auc))
        }
        found["flat_curves"] = [bool(a or b) for a, b in zip(flat["deletion"], flat["insertion"])]
        return found

    def judged(self, curves: np.ndarray, usable: list[bool] | None = None) -> np.ndarray:
        """The curves that can judge their map: the same ones ``metrics`` keeps (not a map that cannot support a
        conclusion, not a curve that never moves)."""
        keep = np.asarray(usable if usable is not None else [True] * len(curves), bool) & ~flat_curves(curves)
        return curves[keep]

    def legend(self, usable: list[bool] | None = None) -> dict[str, str]:
        """What the plot says of each curve's area: its mean over the judged images with their count, or why not."""
        shown = {}
        for name, curves in (("deletion", self.deletion), ("insertion", self.insertion)):
            kept = self.judged(curves, usable)
            if len(kept):
                shown[name] = f"AUC {float(np.trapezoid(kept, self.fractions, axis=1).mean()):.3f}, n = {len(kept)}"
            elif usable is not None and not any(usable):
                shown[name] = "cannot judge: no map here supports a conclusion"
            else:
                shown[name] = "cannot judge: the curves never move"
        return shown

    def plot(self, measure: str = "target probability", usable: list[bool] | None = None) -> bytes:
        """The mean curves over the judged images, each labelled with ``legend``."""
        pyplot = plotting()
        legend = self.legend(usable)
        figure, axis = pyplot.subplots(figsize=(4.2, 3.0), dpi=100)
        for name, curves, better in (("deletion", self.deletion, "lower"), ("insertion", self.insertion, "higher")):
            kept = self.judged(curves, usable)
            values = kept.mean(0) if len(kept) else np.full(len(self.fractions), np.nan)
            axis.plot(self.fractions, values, label=f"{name} ({legend[name]}, {better} is better)")
        axis.set_xlabel("fraction of pixels deleted / inserted")
        axis.set_ylabel(measure)
        axis.set_ylim(0, 1.02)
        axis.legend(fontsize=7)
        return figure_png(figure)


def deletion_insertion(model, images, objective, maps: np.ndarray, steps: int = 16) -> Curves:
    """The curves of each image's chosen target (``objective``, already chosen on the clean images)."""
    spec = model.spec
    unit = spec.model_to_unit(images.detach().cpu().numpy())  # N x H x W x C in [0, 1]
    fractions = np.linspace(0.0, 1.0, steps + 1)
    height, width = unit.shape[1:3]
    scores = CopyScores(model, objective, len(unit), 2 * steps + 1)
    for index, picture in enumerate(unit):
        order = np.argsort(-maps[index].ravel(), kind="stable")
        mean_colour = np.broadcast_to(picture.mean(axis=(0, 1)), picture.shape)
        blurred = ndimage.gaussian_filter(picture, sigma=(height / 16, width / 16, 0))
        masks = np.zeros((steps + 1, height * width), np.float32)
        for step, fraction in enumerate(fractions):
            masks[step, order[: int(round(fraction * height * width))]] = 1.0
        masks = masks.reshape(steps + 1, height, width, 1)
        deleted = picture * (1 - masks[1:]) + mean_colour * masks[1:]
        inserted = blurred * (1 - masks[:-1]) + picture * masks[:-1]
        # nothing deleted and everything inserted are both the picture itself: one forward pass serves both ends
        scores.add(np.concatenate([picture[None], deleted, inserted]))
    probabilities = scores.result()
    return Curves(fractions, probabilities[:, : steps + 1], np.concatenate([probabilities[:, steps + 1 :], probabilities[:, :1]], axis=1))
