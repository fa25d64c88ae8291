"""Train the shipped shapes detector (a small anchor-free detector with a YOLOv8-style output) and export it.

Scenes of one to three small textured shapes on a noisy background (``shapes.make_scene``, 96 x 96) with
known boxes. The network has one stride-8 grid of 12 x 12 anchor points; for each it predicts the distances
from the point to the box's four sides and one sigmoid score per class, and the exported graph decodes them
into YOLOv8's layout, N x (4 + C) x anchors (box centre x, y, width, height in input pixels, then class
scores), ending in a Concat as Ultralytics exports do. Anchor points inside an object are its positives.
Run: ``python -m viz_server_models.train_detector`` (about two minutes on 2 CPU cores).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:
    from viz_server_models import shapes
    from viz_server_models.export import export_onnx
except ImportError:  # run as a plain script from models/
    import shapes
    from export import export_onnx

SEED = 0
OUTPUT = Path(__file__).with_name("shapes_detector.onnx")
SIZE, STRIDE = shapes.SCENE_SIZE, 8
MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


def block(channels_in: int, channels_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(channels_in, channels_out, 3, stride, 1), nn.BatchNorm2d(channels_out), nn.ReLU())


class ShapesDetector(nn.Module):
    """Backbone to a stride-8 map; a box branch (distances to the four sides, with two more 3 x 3 blocks of
    context) and a class branch per point (one 1 x 1 layer: each point's class score sees a 23-pixel window)."""

    def __init__(self, classes: int = len(shapes.CLASSES), size: int = SIZE):
        super().__init__()
        self.backbone = nn.Sequential(block(3, 16, 2), block(16, 32, 2), block(32, 32), block(32, 64, 2))
        self.box = nn.Sequential(block(64, 64), block(64, 64), nn.Conv2d(64, 4, 1))
        self.cls = nn.Sequential(nn.Conv2d(64, 64, 1), nn.ReLU(), nn.Conv2d(64, classes, 1))
        cells = size // STRIDE
        ys, xs = torch.meshgrid(torch.arange(cells), torch.arange(cells), indexing="ij")
        self.register_buffer("points", torch.stack([xs, ys]).reshape(2, -1).float() * STRIDE + STRIDE / 2)  # 2 x anchors

    def raw(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(distances N x 4 x anchors in pixels, class logits N x C x anchors)."""
        features = self.backbone(x)
        return F.softplus(self.box(features)).flatten(2) * STRIDE, self.cls(features).flatten(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        distances, logits = self.raw(x)
        top_left, bottom_right = self.points - distances[:, :2], self.points + distances[:, 2:]
        return torch.cat([(top_left + bottom_right) / 2, bottom_right - top_left, logits.sigmoid()], 1)


def to_model_space(images: np.ndarray) -> torch.Tensor:
    unit = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    return (unit - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]


def targets_for(scene: shapes.Scene, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per anchor point: class target (one-hot), box distances target, and whether it is a positive."""
    classes = torch.zeros(len(shapes.CLASSES), points.shape[1])
    distances = torch.zeros(4, points.shape[1])
    positive = torch.zeros(points.shape[1], dtype=torch.bool)
    xs, ys = points[0].long().clamp(0, SIZE - 1), points[1].long().clamp(0, SIZE - 1)
    on = torch.from_numpy(scene.classes)[ys, xs]  # 0 = background, 1 + class
    for box, label in zip(scene.boxes, scene.labels):
        inside = on == label + 1
        if not inside.any():  # a small object between points: its nearest point
            centre = torch.tensor([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
            inside = torch.zeros_like(positive)
            inside[((points - centre[:, None]) ** 2).sum(0).argmin()] = True
        classes[label, inside] = 1.0
        x1, y1, x2, y2 = (float(v) for v in box)
        distances[:, inside] = torch.stack([points[0, inside] - x1, points[1, inside] - y1, x2 - points[0, inside], y2 - points[1, inside]])
        positive |= inside
    return classes, distances, positive


def train(steps: int = 3000, batch: int = 32, pool: int = 4000) -> tuple[ShapesDetector, dict]:
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED)
    model = ShapesDetector()
    scenes = [shapes.make_scene(rng) for _ in range(pool)]
    prepared = [targets_for(scene, model.points) for scene in scenes]
    images = np.stack([scene.image for scene in scenes])
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps)
    model.train()
    for _step in range(steps):
        chosen = rng.choice(pool, batch, replace=False)
        distances, logits = model.raw(to_model_space(images[chosen]))
        classes = torch.stack([prepared[i][0] for i in chosen])
        true_distances = torch.stack([prepared[i][1] for i in chosen])
        positive = torch.stack([prepared[i][2] for i in chosen])
        class_loss = F.binary_cross_entropy_with_logits(logits, classes, reduction="sum") / max(int(positive.sum()), 1)
        box_loss = (F.smooth_l1_loss(distances / STRIDE, true_distances / STRIDE, reduction="none").sum(1) * positive).sum() / max(int(positive.sum()), 1)
        loss = class_loss + box_loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    return model, evaluate(model)


def evaluate(model: ShapesDetector, count: int = 300) -> dict:
    """Recall and precision at IoU 0.5 after the decoder's thresholds (confidence 0.25, NMS 0.45), fresh scenes."""
    from torchvision.ops import batched_nms, box_iou

    rng = np.random.default_rng(SEED + 1)
    scenes = [shapes.make_scene(rng) for _ in range(count)]
    with torch.no_grad():
        outputs = model(to_model_space(np.stack([scene.image for scene in scenes])))
    found = matched = objects = 0
    for output, scene in zip(outputs, scenes):
        rows = output.T
        confidence, labels = rows[:, 4:].max(1)
        keep = torch.nonzero(confidence >= 0.25).flatten()
        boxes = torch.cat([rows[:, :2] - rows[:, 2:4] / 2, rows[:, :2] + rows[:, 2:4] / 2], 1)
        keep = keep[batched_nms(boxes[keep], confidence[keep], labels[keep], 0.45)]
        found += len(keep)
        objects += len(scene.boxes)
        if len(keep) and len(scene.boxes):
            overlaps = box_iou(torch.from_numpy(scene.boxes), boxes[keep])
            same = torch.from_numpy(scene.labels)[:, None] == labels[keep][None]
            matched += int(((overlaps >= 0.5) & same).any(1).sum())
    return {"recall": matched / max(objects, 1), "precision": matched / max(found, 1)}


def main() -> None:
    model, figures = train()
    export_onnx(
        model,
        torch.zeros(1, 3, SIZE, SIZE),
        OUTPUT,
        {
            "task": "detection",
            "layout": "NCHW",
            "value_range": [0.0, 1.0],
            "mean": list(MEAN),
            "std": list(STD),
            "labels": list(shapes.CLASSES),
            "description": "Anchor-free detector of textured shapes, YOLOv8-style output N x (4 + 4) x 144 (viz_server_models.train_detector).",
            "recall_at_iou_0.5": f"{figures['recall']:.4f}",
            "precision_at_iou_0.5": f"{figures['precision']:.4f}",
        },
    )
    print(f"shapes detector: recall {figures['recall']:.3f}, precision {figures['precision']:.3f} at IoU 0.5 -> {OUTPUT}")


if __name__ == "__main__":
    main()
