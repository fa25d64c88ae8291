"""Optimizing the input image (lecture notes, "Optimizing the Input Images"): shared machinery.

Images are optimized in unit space (values in [0, 1], the model's channel order) and mapped through the
model spec into model space on every step, so they always stay inside the model's valid input range.

Two parameterizations:
- ``pixel``: plain gradient ascent on pixels with the regularizers of Simonyan et al. 2014 (L2 decay) and
  Yosinski et al. 2015, "Understanding Neural Networks Through Deep Visualization" (Gaussian blur every k
  steps, clipping of small-norm and small-contribution pixels), plus random jitter.
- ``fourier``: a decorrelated Fourier-space image with colour decorrelation, optimized with Adam under random
  jitter, scale and rotation (Olah, Mordvintsev & Schubert 2017, "Feature Visualization"; the Lucid recipe).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from viz_server.rendering import figure_png, png_bytes
from viz_server.rendering import pyplot as plotting
from viz_server.techniques import Artifact, Context, Param, Result

# Lucid's square root of the ImageNet colour correlation matrix (a fixed decorrelation of RGB).
COLOUR_CORRELATION = torch.tensor([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
COLOUR_CORRELATION = COLOUR_CORRELATION / COLOUR_CORRELATION.norm(dim=0).max()

OPTIMIZATION_PARAMS = (
    Param("steps", "int", 200, "Optimization steps.", minimum=1, maximum=5000),
    Param("parameterization", "choice", "pixel", "Plain pixels with regularizers, or a decorrelated Fourier image (less noise).", choices=("pixel", "fourier")),
    Param("learning_rate", "float", 0.05, "Step size (pixel: the largest change of any pixel per step; fourier: Adam's).", minimum=1e-5, maximum=10.0),
    Param("init", "choice", "zeros", "Start from a grey image (zeros in the centred space) or seeded noise.", choices=("zeros", "random")),
    Param(
        "l2_decay",
        "float",
        0.05,
        "Pixel: weight of the L2 decay towards grey (Simonyan et al. 2014), on the mean squared colour norm.",
        minimum=0.0,
        maximum=100.0,
    ),
    Param("blur_every", "int", 4, "Pixel: Gaussian blur every k steps (0 = never).", minimum=0, maximum=1000),
    Param("blur_sigma", "float", 0.5, "Pixel: sigma of that blur, in pixels.", minimum=0.0, maximum=10.0),
    Param("clip_norm_percentile", "float", 0.0, "Pixel: pixels with a colour norm below this percentile are reset to grey.", minimum=0.0, maximum=99.0),
    Param(
        "clip_contribution_percentile",
        "float",
        0.0,
        "Pixel: pixels contributing least (|x * grad|) below this percentile are reset.",
        minimum=0.0,
        maximum=99.0,
    ),
    Param("jitter", "int", 2, "Random shift in pixels applied each step.", minimum=0, maximum=64),
    Param("frames", "int", 4, "Intermediate images kept.", minimum=0, maximum=32),
)


@dataclass
class Trajectory:
    image: torch.Tensor  # 1 x H x W x C unit space
    frames: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (step, unit image)
    objective: list[float] = field(default_factory=list)


def to_model_space(spec, unit: torch.Tensor) -> torch.Tensor:
    """Differentiable ModelSpec.unit_to_model: N x H x W x C in [0, 1] -> the model's own input."""
    low, high = spec.value_range
    values = low + unit * (high - low)
    values = (values - torch.tensor(spec.mean, dtype=unit.dtype)) / torch.tensor(spec.std, dtype=unit.dtype)
    return values.permute(0, 3, 1, 2) if spec.layout == "NCHW" else values


def gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of N x H x W x C."""
    if sigma <= 0:
        return image
    radius = max(1, int(math.ceil(3 * sigma)))
    offsets = torch.arange(-radius, radius + 1, dtype=image.dtype)
    kernel = torch.exp(-(offsets**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    channels = image.shape[3]
    planes = image.permute(0, 3, 1, 2)
    planes = F.conv2d(F.pad(planes, (radius, radius, 0, 0), mode="replicate"), kernel.view(1, 1, 1, -1).repeat(channels, 1, 1, 1), groups=channels)
    planes = F.conv2d(F.pad(planes, (0, 0, radius, radius), mode="replicate"), kernel.view(1, 1, -1, 1).repeat(channels, 1, 1, 1), groups=channels)
    return planes.permute(0, 2, 3, 1)


def total_variation(image: torch.Tensor) -> torch.Tensor:
    return (image[:, 1:] - image[:, :-1]).abs().mean() + (image[:, :, 1:] - image[:, :, :-1]).abs().mean()


class FourierImage:
    """An image held as a scaled Fourier spectrum with decorrelated colours; ``unit()`` gives N x H x W x C."""

    def __init__(self, height: int, width: int, channels: int, generator: torch.Generator, decay: float = 1.0):
        self.height, self.width, self.channels = height, width, channels
        fy = torch.fft.fftfreq(height)[:, None]
        fx = torch.fft.rfftfreq(width)[None, :]
        frequencies = torch.sqrt(fx**2 + fy**2)
        self.scale = 1.0 / torch.clamp(frequencies, min=1.0 / max(height, width)) ** decay
        self.spectrum = (torch.randn(channels, height, width // 2 + 1, 2, generator=generator) * 0.01).requires_grad_(True)

    def parameters(self) -> list[torch.Tensor]:
        return [self.spectrum]

    def unit(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        planes = torch.fft.irfft2(spectrum, s=(self.height, self.width), norm="ortho")  # C x H x W
        image = planes.permute(1, 2, 0)[None]  # 1 x H x W x C
        if self.channels == 3:
            image = image @ COLOUR_CORRELATION.T
        return torch.sigmoid(image / 4.0)  # Lucid divides the Fourier image by 4 before the sigmoid


def random_transform(image: torch.Tensor, generator: torch.Generator, jitter: int) -> torch.Tensor:
    """Lucid's robustness transforms on N x H x W x C: jitter, scale, rotate (bilinear, reflect padding)."""
    planes = image.permute(0, 3, 1, 2)
    angle = (torch.rand(1, generator=generator).item() - 0.5) * math.radians(20)
    zoom = 0.9 + 0.2 * torch.rand(1, generator=generator).item()
    shift = (torch.rand(2, generator=generator) - 0.5) * 2 * jitter / torch.tensor([planes.shape[3], planes.shape[2]]) * 2
    theta = torch.tensor(
        [[math.cos(angle) / zoom, -math.sin(angle) / zoom, float(shift[0])], [math.sin(angle) / zoom, math.cos(angle) / zoom, float(shift[1])]],
        dtype=image.dtype,
    )[None]
    grid = F.affine_grid(theta.expand(len(planes), 2, 3), list(planes.shape), align_corners=False)
    return F.grid_sample(planes, grid, mode="bilinear", padding_mode="reflection", align_corners=False).permute(0, 2, 3, 1)


def optimize(
    ctx: Context,
    objective: Callable[[torch.Tensor], torch.Tensor],
    params: dict,
    start: torch.Tensor | None = None,
    regularize: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> Trajectory:
    """Maximize ``objective(model-space batch of 1)``; ``regularize(unit image)`` is subtracted from it."""
    spec = ctx.model.spec
    generator = ctx.torch_generator()
    steps = params["steps"]
    keep = set(np.linspace(0, steps - 1, params["frames"] + 1).round().astype(int).tolist()[:-1]) if params["frames"] else set()
    trajectory = Trajectory(image=torch.empty(0))
    if params["parameterization"] == "fourier":
        source = FourierImage(spec.height, spec.width, spec.channels, generator)
        optimizer = torch.optim.Adam(source.parameters(), lr=params["learning_rate"])
        for step in range(steps):
            unit = source.unit()
            with torch.enable_grad():
                value = objective(to_model_space(spec, random_transform(unit, generator, params["jitter"])))
                loss = -value + (regularize(unit) if regularize else 0)
                optimizer.zero_grad()
                loss.backward()
            optimizer.step()
            _record(ctx, trajectory, step, steps, float(value), unit, keep)
        trajectory.image = source.unit().detach()
        return trajectory

    if start is not None:
        image = start.clone()
    elif params["init"] == "random":
        image = 0.5 + 0.1 * torch.randn(1, spec.height, spec.width, spec.channels, generator=generator)
    else:
        image = torch.full((1, spec.height, spec.width, spec.channels), 0.5)
    image = image.clamp(0, 1)
    for step in range(steps):
        image.requires_grad_(True)
        jitter = params["jitter"]
        dy, dx = torch.randint(-jitter, jitter + 1, (2,), generator=generator).tolist() if jitter else (0, 0)
        with torch.enable_grad():
            shifted = torch.roll(image, shifts=(dy, dx), dims=(1, 2))
            value = objective(to_model_space(spec, shifted))
            decay = params["l2_decay"] * ((image - 0.5) ** 2).sum(dim=3).mean()  # mean squared colour norm: independent of size
            loss = -value + decay + (regularize(image) if regularize else 0)
            (gradient,) = torch.autograd.grad(loss, image)
        with torch.no_grad():
            image = image - params["learning_rate"] * gradient / (gradient.abs().max() + 1e-12)  # no pixel moves more than the rate
            if params["blur_every"] and (step + 1) % params["blur_every"] == 0:
                image = gaussian_blur(image, params["blur_sigma"])
            centred = image - 0.5
            if params["clip_norm_percentile"] > 0:
                norms = centred.norm(dim=3)
                centred = centred * (norms >= torch.quantile(norms.flatten(), params["clip_norm_percentile"] / 100))[..., None]
            if params["clip_contribution_percentile"] > 0:
                contribution = (centred * -gradient).sum(dim=3).abs()
                centred = centred * (contribution >= torch.quantile(contribution.flatten(), params["clip_contribution_percentile"] / 100))[..., None]
            image = (0.5 + centred).clamp(0, 1)
        _record(ctx, trajectory, step, steps, float(value), image, keep)
    trajectory.image = image.detach()
    return trajectory


def _record(ctx: Context, trajectory: Trajectory, step: int, steps: int, value: float, unit: torch.Tensor, keep: set[int]) -> None:
    trajectory.objective.append(value)
    if step in keep:
        trajectory.frames.append((step, unit.detach()[0].numpy().copy()))
    if step % 10 == 0 or step == steps - 1:
        ctx.progress(step + 1, steps, f"step {step + 1}: objective {value:.4g}")


def display(spec, unit: np.ndarray) -> np.ndarray:
    """H x W x C unit image (model channel order) -> H x W x 3 uint8 RGB for people."""
    return spec.to_display(spec.unit_to_model(unit[None].astype(np.float32)))[0]


def trajectory_result(ctx: Context, trajectory: Trajectory, name: str, caption: str) -> Result:
    """The final image, intermediate frames, objective curve and arrays every input optimization returns."""
    spec = ctx.model.spec
    final_unit = trajectory.image[0].numpy()
    model_space = spec.unit_to_model(final_unit[None].astype(np.float32))
    artifacts = [Artifact(f"{name}.png", caption, data=png_bytes(display(spec, final_unit), 224), array=name, group="result")]
    for step, frame in trajectory.frames:
        artifacts.append(
            Artifact(f"{name}_step_{step}.png", f"after step {step}", data=png_bytes(display(spec, frame), 96), array="frames", group="intermediate frames")
        )
    artifacts.append(Artifact("objective.png", "objective over the steps", kind="plot", data=_curve(trajectory.objective), array="objective", group="result"))
    arrays = {name: model_space, "objective": np.asarray(trajectory.objective, np.float32)}
    if trajectory.frames:
        arrays["frames"] = np.stack([frame for _, frame in trajectory.frames]).astype(np.float32)
    return Result(artifacts=artifacts, arrays=arrays, metrics={"final_objective": round(trajectory.objective[-1], 6), "steps": len(trajectory.objective)})


def _curve(values: list[float]) -> bytes:
    pyplot = plotting()

    figure, axis = pyplot.subplots(figsize=(4.0, 2.6), dpi=100)
    axis.plot(values)
    axis.set_xlabel("step")
    axis.set_ylabel("objective")
    return figure_png(figure)
