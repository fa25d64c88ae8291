"""Object detectors: three output layouts, decoded with non-maximum suppression, and one-detection objectives.

- ``YoloAnchorsLast``: N x (4 + C) x anchors (YOLOv8/v11 exports): cx, cy, w, h in input pixels, then one
  (sigmoid) score per class; extra rows after the classes (mask coefficients) are ignored.
- ``YoloAnchorsFirst``: N x anchors x (5 + C) (YOLOv5/v7 exports): cx, cy, w, h, objectness, class scores;
  a detection's confidence is objectness x class score.
- ``BoxesAndScores``: N x K x 6 (end-to-end exports such as YOLOv10): x1, y1, x2, y2, score, class, already
  filtered.

Detections are the anchors whose confidence reaches ``CONFIDENCE``, filtered per class by non-maximum
suppression at ``IOU`` (torchvision's ``batched_nms``), strongest first. A target is ``detection:K`` (the K-th
detection of the model's own decoded output on each image; ``detection:K:x|y|w|h`` for a box coordinate
instead of the score), ``box:X1,Y1,X2,Y2`` (the detection overlapping that box most), a class label or index
(the strongest detection of that class), or ``top1`` (= ``detection:0``). The objective is the chosen anchor's
confidence, which is what the model scored; the box it explains is drawn on the image.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import batched_nms, box_iou

from viz_server.errors import UserError
from viz_server.objectives import Missing, Objective, refuse_target
from viz_server.tasks import OutputDecoder, OutputInfo

CONFIDENCE = 0.25
IOU = 0.45
MAX_DETECTIONS = 100
COORDINATES = ("x", "y", "w", "h")
DETECTION_TASKS = ("detection", "detect")  # ours, and Ultralytics' metadata value


def declared_detector(output: OutputInfo) -> bool:
    """The metadata says this is a detector (our ``task`` key or Ultralytics' ``task: detect``)."""
    return str(output.metadata.get("task", "")).strip().strip("'\"").lower() in DETECTION_TASKS


def ultralytics_class_count(output: OutputInfo) -> int | None:
    """Ultralytics exports name their classes in the ``names`` metadata (a Python dict literal)."""
    try:
        names = ast.literal_eval(output.metadata.get("names", ""))
    except (ValueError, SyntaxError):
        return None
    return len(names) if isinstance(names, dict) else None


@dataclass(frozen=True)
class Detection:
    anchor: int  # row of the output this detection comes from
    label: int
    confidence: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in input pixels

    def to_json(self, spec) -> dict:
        return {
            "class": spec.label(self.label),
            "index": self.label,
            "confidence": round(self.confidence, 6),
            "box": [round(value, 2) for value in self.box],
            "anchor": self.anchor,
        }


class DetectionLayout(OutputDecoder):
    """What the three layouts share: decoding to detections, targets, and the objective."""

    task = "detection"
    targets = (
        "top1 (the strongest detection), detection:K (the K-th detection; detection:K:x|y|w|h for a box "
        "coordinate), box:X1,Y1,X2,Y2 (the detection overlapping it most), or a class (its strongest detection)"
    )

    # ---- per layout --------------------------------------------------------------------------------
    def rows(self, outputs):
        """N x anchors x values, whatever the layout's axis order."""
        return outputs

    def candidates(self, rows: torch.Tensor, classes: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per anchor of one image: boxes (x1, y1, x2, y2), confidence and class."""
        raise NotImplementedError

    def confidence(self, rows, anchor: int, label: int):
        """The differentiable confidence of one anchor and class in one image's rows."""
        raise NotImplementedError

    def coordinate(self, rows, anchor: int, which: str):
        return rows[anchor, COORDINATES.index(which)]

    # ---- shared ------------------------------------------------------------------------------------
    def classes(self, rows: torch.Tensor, spec) -> int:
        return len(spec.labels) if spec.labels else rows.shape[-1] - self.fixed_columns

    fixed_columns = 4

    def detections(self, outputs, spec) -> list[list[Detection]]:
        """Every image's detections after the confidence threshold and non-maximum suppression, strongest first."""
        rows = self.rows(torch.as_tensor(np.asarray(outputs) if not isinstance(outputs, torch.Tensor) else outputs).detach().float())
        found = []
        for image_rows in rows:
            boxes, confidence, labels = self.candidates(image_rows, self.classes(image_rows, spec))
            keep = torch.nonzero(confidence >= CONFIDENCE).flatten()
            if len(keep):
                kept = batched_nms(boxes[keep], confidence[keep], labels[keep], IOU)[:MAX_DETECTIONS]
                keep = keep[kept]
            found.append([Detection(int(a), int(labels[a]), float(confidence[a]), tuple(float(v) for v in boxes[a])) for a in keep])
        return found

    def decode(self, outputs, spec):
        return [{"detections": [detection.to_json(spec) for detection in image]} for image in self.detections(outputs, spec)]

    def suggested_targets(self, spec, output_shape):
        detections = [(f"detection:{k}", f"detection {k}" + (" (the strongest)" if k == 0 else "")) for k in range(5)]
        return [("top1", "top1: the strongest detection"), *detections, *((label, f"the strongest {label}") for label in spec.get("labels") or [])]

    def objective(self, target, ctx, region=""):
        if str(region or "").strip():
            raise UserError("a region applies to dense outputs; for a detector, choose a detection (detection:K or box:X1,Y1,X2,Y2).")
        return DetectionObjective(target, self, ctx.model.spec)


class YoloAnchorsLast(DetectionLayout):
    name = "yolo_anchors_last"
    summary = "YOLOv8/v11-style N x (4 + C) x anchors: box centre and size, then class scores, per anchor."
    priority = 20

    def recognizes(self, output: OutputInfo) -> bool:
        if len(output.shape) != 3:
            return False
        values, anchors = output.shape[1], output.shape[2]
        wide = values is not None and values >= 5 and (anchors is None or anchors > values)
        return wide and (declared_detector(output) or output.final_op == "Concat")

    def class_count(self, output):
        return ultralytics_class_count(output) or (output.shape[1] - 4 if output.shape[1] else None)

    def rows(self, outputs):
        return outputs.transpose(1, 2)

    def candidates(self, rows, classes):
        scores = rows[:, 4 : 4 + classes]
        confidence, labels = scores.max(1)
        return xywh_to_xyxy(rows[:, :4]), confidence, labels

    def confidence(self, rows, anchor, label):
        return rows[anchor, 4 + label]


class YoloAnchorsFirst(DetectionLayout):
    name = "yolo_anchors_first"
    summary = "YOLOv5/v7-style N x anchors x (5 + C): box centre and size, objectness, then class scores, per anchor."
    priority = 19
    fixed_columns = 5

    def recognizes(self, output: OutputInfo) -> bool:
        if len(output.shape) != 3:
            return False
        anchors, values = output.shape[1], output.shape[2]
        tall = values is not None and values >= 6 and (anchors is None or anchors > values)
        return tall and (declared_detector(output) or output.final_op == "Concat")

    def class_count(self, output):
        return ultralytics_class_count(output) or (output.shape[2] - 5 if output.shape[2] else None)

    def candidates(self, rows, classes):
        scores = rows[:, 4:5] * rows[:, 5 : 5 + classes]
        confidence, labels = scores.max(1)
        return xywh_to_xyxy(rows[:, :4]), confidence, labels

    def confidence(self, rows, anchor, label):
        return rows[anchor, 4] * rows[anchor, 5 + label]


class BoxesAndScores(DetectionLayout):
    name = "boxes_and_scores"
    summary = "End-to-end N x K x 6 (YOLOv10-style): x1, y1, x2, y2, score, class per detection, already filtered."
    priority = 21
    MAX_K = 1000

    def recognizes(self, output: OutputInfo) -> bool:
        if len(output.shape) != 3 or output.shape[2] != 6:
            return False
        kept = output.shape[1]  # unknown when the export leaves it symbolic
        return (kept is None or kept <= self.MAX_K) and (declared_detector(output) or output.final_op in ("Concat", "GatherElements", "Gather"))

    def class_count(self, output):
        return ultralytics_class_count(output)

    def classes(self, rows, spec):
        return len(spec.labels)

    def candidates(self, rows, classes):
        return rows[:, :4], rows[:, 4], rows[:, 5].round().long().clamp(min=0)

    def confidence(self, rows, anchor, label):
        return rows[anchor, 4]

    def coordinate(self, rows, anchor, which):
        x1, y1, x2, y2 = (rows[anchor, i] for i in range(4))
        return {"x": (x1 + x2) / 2, "y": (y1 + y2) / 2, "w": x2 - x1, "h": y2 - y1}[which]


def xywh_to_xyxy(boxes: torch.Tensor) -> torch.Tensor:
    centre, size = boxes[:, :2], boxes[:, 2:4]
    return torch.cat([centre - size / 2, centre + size / 2], 1)


class DetectionObjective(Objective):
    """One detection's confidence (or one of its box coordinates). A choice is (the detection, every detection on
    that image, the coordinate or None); an image without the detection the target means is ``Missing``."""

    can_miss = True

    def __init__(self, target: str, layout: DetectionLayout, spec):
        super().__init__(target)
        self.layout, self.spec = layout, spec
        self.rank, self.box, self.label, self.part = self._parse(str(target).strip())

    def _parse(self, text: str):
        expected = "top1, detection:K, detection:K:x|y|w|h, box:X1,Y1,X2,Y2 or a class"
        lowered = text.lower()
        if lowered in ("", "top1", "top-1", "predicted"):
            return 0, None, None, None
        if lowered.startswith("detection:"):
            parts = lowered.split(":")
            try:
                rank = int(parts[1])
            except (IndexError, ValueError):
                raise refuse_target(text, "detection", expected) from None
            part = parts[2] if len(parts) > 2 else None
            if rank < 0 or len(parts) > 3 or (part is not None and part not in COORDINATES):
                raise refuse_target(text, "detection", expected)
            return rank, None, None, part
        if lowered.startswith("box:"):
            try:
                box = tuple(float(v) for v in lowered[4:].split(","))
            except ValueError:
                raise refuse_target(text, "detection", expected) from None
            if len(box) != 4 or box[2] <= box[0] or box[3] <= box[1]:
                raise UserError(f"box {text[4:]!r} must be X1,Y1,X2,Y2 in input pixels with X1 < X2 and Y1 < Y2.")
            return None, box, None, None
        return None, None, self.spec.class_index(text), None

    def choose(self, outputs):
        chosen = []
        for index, found in enumerate(self.layout.detections(outputs, self.spec)):
            detection, missing = self._detection(index, found)
            chosen.append(Missing(missing) if detection is None else (detection, found, self.part))
        return chosen

    def _detection(self, index, found):
        """(the detection this target means on image ``index``, None) or (None, why there is none)."""
        if not found:
            return None, f"the model detects nothing on image {index} (no confidence reaches {CONFIDENCE}); there is no detection to explain."
        if self.rank is not None:
            if self.rank >= len(found):
                return None, f"image {index} has {len(found)} detection(s); detection:{self.rank} does not exist (the first is detection:0)."
            return found[self.rank], ""
        if self.box is not None:
            overlaps = box_iou(torch.tensor([self.box]), torch.tensor([d.box for d in found]))[0]
            if float(overlaps.max()) <= 0:
                return None, f"no detection on image {index} overlaps the box {list(self.box)}."
            return found[int(overlaps.argmax())], ""
        of_class = [d for d in found if d.label == self.label]
        if not of_class:
            return None, f"the model detects no {self.spec.label(self.label)} on image {index}."
        return of_class[0], ""

    def selected(self, outputs, choices):
        rows = self.layout.rows(outputs)
        values = []
        for image_rows, (detection, _found, part) in zip(rows, choices):
            if part is None:
                values.append(self.layout.confidence(image_rows, detection.anchor, detection.label))
            else:
                values.append(self.layout.coordinate(image_rows, detection.anchor, part))
        return torch.stack(values)

    def probability(self, outputs, choices):
        rows = self.layout.rows(torch.as_tensor(np.asarray(outputs, np.float32)))
        return np.array([float(self.layout.confidence(image_rows, d.anchor, d.label)) for image_rows, (d, _f, _p) in zip(rows, choices)])

    def describe(self, choice):
        detection, found, part = choice
        rank = found.index(detection)
        what = f"the {part} coordinate of " if part else ""
        return f"{what}detection {rank}: {self.spec.label(detection.label)} ({detection.confidence:.2f})"

    def details(self, choice):
        detection, found, part = choice
        return {
            "detection": found.index(detection),
            "explains": part or "confidence",
            **detection.to_json(self.spec),
            "detections": [d.to_json(self.spec) for d in found],
        }

    def predicted(self, outputs):
        return [
            ", ".join(f"{self.spec.label(d.label)} {d.confidence:.2f}" for d in found[:5]) or "nothing" for found in self.layout.detections(outputs, self.spec)
        ]

    def overlay(self, picture, choice):
        detection, found, _part = choice
        image = Image.fromarray(picture).convert("RGB")
        scale = max(1, 256 // max(image.size))
        image = image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)
        draw = ImageDraw.Draw(image)
        for other in found:
            chosen = other is detection
            box = [value * scale for value in other.box]
            draw.rectangle(box, outline=(0, 255, 255) if chosen else (255, 200, 0), width=3 if chosen else 1)
            draw.text((box[0] + 2, box[1] + 1), f"{found.index(other)}: {self.spec.label(other.label)}", fill=(255, 255, 255))
        return np.asarray(image)
