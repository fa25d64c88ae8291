"""Train the shipped shapes ViT: a small vision transformer (Dosovitskiy et al. 2021) on the shapes dataset, with
its attention written out (softmax(QK^T) visible in the graph), for the transformer explanations (attention
rollout, transformer attribution, Grad-CAM on tokens) and their tests on pictures with known object masks.

Tokens of 8 x 8 pixels from a small convolutional stem (Xiao et al. 2021, "Early Convolutions Help Transformers See
Better"; an 8 x 8 grid and a class token), 4 pre-norm blocks of width 64 with 4 heads.
Run: ``python -m viz_server_models.train_vit`` (a few minutes on 2 CPU cores); writes shapes_vit.onnx.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

try:
    from viz_server_models import shapes, train_shapes
    from viz_server_models.export import export_onnx
except ImportError:  # run as a plain script from models/
    import shapes
    import train_shapes
    from export import export_onnx

OUTPUT = Path(__file__).with_name("shapes_vit.onnx")
PATCH, WIDTH, HEADS, DEPTH = 8, 64, 4, 4


class Block(nn.Module):
    """Pre-norm transformer block: x + attention(norm1(x)), then x + MLP(norm2(x))."""

    def __init__(self):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(WIDTH), nn.LayerNorm(WIDTH)
        self.qkv, self.proj = nn.Linear(WIDTH, 3 * WIDTH), nn.Linear(WIDTH, WIDTH)
        self.mlp = nn.Sequential(nn.Linear(WIDTH, 2 * WIDTH), nn.GELU(), nn.Linear(2 * WIDTH, WIDTH))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, tokens, _ = x.shape
        q, k, v = self.qkv(self.norm1(x)).reshape(n, tokens, 3, HEADS, WIDTH // HEADS).permute(2, 0, 3, 1, 4).unbind(0)
        attention = (q @ k.transpose(-2, -1) * (WIDTH // HEADS) ** -0.5).softmax(-1)  # N x heads x T x T
        x = x + self.proj((attention @ v).transpose(1, 2).reshape(n, tokens, WIDTH))
        return x + self.mlp(self.norm2(x))


class ShapesViT(nn.Module):
    def __init__(self, classes: int = len(shapes.CLASSES)):
        super().__init__()
        grid = shapes.IMAGE_SIZE // PATCH
        # a convolutional stem makes the 8 x 8 tokens (Xiao et al. 2021: transformers train far better on little data so)
        self.patches = nn.Sequential(
            nn.Conv2d(3, 32, 3, 2, 1),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.Conv2d(32, WIDTH, 3, 2, 1),
            nn.BatchNorm2d(WIDTH),
            nn.ReLU(),
            nn.Conv2d(WIDTH, WIDTH, 2, 2),
        )
        self.cls_token = nn.Parameter(torch.zeros(1, 1, WIDTH))
        self.position = nn.Parameter(torch.randn(1, 1 + grid * grid, WIDTH) * 0.02)
        self.blocks = nn.Sequential(*(Block() for _ in range(DEPTH)))
        self.norm = nn.LayerNorm(WIDTH)
        self.head = nn.Linear(WIDTH, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patches(x).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], 1) + self.position  # x.shape: a dynamic batch
        return self.head(self.norm(self.blocks(tokens))[:, 0])


def main() -> None:
    model, figures = train_shapes.train(count=6000, epochs=25, network=ShapesViT, max_lr=2e-3)
    export_onnx(
        model,
        torch.zeros(1, 3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE),
        OUTPUT,
        {
            **train_shapes.SPEC,
            "description": "Small vision transformer (8 x 8 patches, 4 blocks) on procedurally generated textured shapes.",
            "test_accuracy": f"{figures['test_accuracy']:.4f}",
            "shape_bias": f"{figures['shape_bias']:.4f}",
        },
    )
    print(f"shapes ViT: test accuracy {figures['test_accuracy']:.4f}, shape bias on cue conflicts {figures['shape_bias']:.3f} -> {OUTPUT}")


if __name__ == "__main__":
    main()
