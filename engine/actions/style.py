"""`--sref`: a style taken from reference pictures, by their latent statistics, on any denoising run.

No IP-Adapter is needed. Each reference is encoded by the model's own VAE; what is kept of it is
the per-channel mean and standard deviation of its latents (pooled over all references), which is
what a latent diffusion model's colour palette, brightness and contrast live in, and nothing of
where anything is. After every denoising step (the pipeline's `callback_on_step_end`, which also
runs previews and `--stop`), each styled tile's latents are moved a little toward those
statistics (AdaIN), accounting for the noise still in them:

- at a step where the latents are `x = a·x0 + b·ε`, the target mean is `a·μ_ref` and the target
  standard deviation `sqrt(a²·σ_ref² + b²)`; early on, where `b` dominates, the push mostly sets the
  low-frequency colour the model then builds on, and late it matches contrast;
- each step closes a share `β = params.style_strength(--sw)` of the gap (0.39 at the default 100).
  The model pulls back toward its own statistics between steps, so the push is renewed every step;
  spreading one share over the run instead was measured too weak to see (bench/sref_bench.py).

Layout comes from the seed and the prompt alone: the statistics are global, so the reference's
composition cannot leak in (bench/sref_bench.py measures both). Style codes (`--sref random`) are
seeded palettes (engine/style.py) through the same path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, ImageOps

from engine import style
from engine.family import of_pipeline
from engine.params import style_strength
from engine.requests import Feature, RenderRequest
from engine.vae import encode_pixels

REFERENCE_SIDE = 64  # references are encoded at the request's size, but at least this many pixels a side


@dataclass
class StyleTarget:
    """Per output row: the references' latent statistics, and the share of the gap each step closes."""

    mean: torch.Tensor  # (N, C, 1, 1)
    std: torch.Tensor  # (N, C, 1, 1)
    strength: torch.Tensor  # (N, 1, 1, 1): the share of the gap each step closes; 0 for a tile without a style
    rows: torch.Tensor  # (N,) bool: the styled tiles

    def step(self, pipe: Any, latents: torch.Tensor, t: Any, size: tuple[int, int]) -> torch.Tensor:
        """The pipeline's latents after one step, moved toward the target."""
        family = of_pipeline(pipe)
        x = family.unpack(pipe, latents, *size).float()
        signal, noise = family.noise_after_step(pipe, t)
        beta = self.strength.to(x.device)
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True).clamp_min(1e-6)
        target_mean = signal * self.mean.to(x.device)
        target_std = (signal**2 * self.std.to(x.device) ** 2 + noise**2).sqrt()
        moved = (x - mean) * (1 + beta * (target_std / std - 1)) + mean + beta * (target_mean - mean)
        rows = self.rows.to(x.device).view(-1, 1, 1, 1)
        out = torch.where(rows, moved, x).to(latents.dtype)
        return family.pack(pipe, out)


def check_style(request: RenderRequest) -> None:
    """What every action checks of a request's style (the family's own refusal comes first, in the engine)."""
    for code in request.style_codes:
        style.palette(code, size=1)  # raises ValueError for a code out of range
    style_strength(request.style_weight)


@torch.no_grad()
def style_target(pipe: Any, requests: Sequence[RenderRequest]) -> StyleTarget | None:
    """The batch's style statistics, one row per tile; None when no request in it has a style."""
    if not any(r.styled for r in requests):
        return None
    family = of_pipeline(pipe)
    reason = family.supports(Feature.STYLE_REFERENCE)
    if reason is not None:
        raise ValueError(reason)
    first = requests[0]
    channels = int(pipe.vae.config.latent_channels)
    size = (max(REFERENCE_SIDE, first.width), max(REFERENCE_SIDE, first.height))
    means, stds, strengths, rows = [], [], [], []
    for request in requests:
        check_style(request)
        if request.styled:
            mean, std = reference_statistics(pipe, references(request), size)
        else:
            mean, std = torch.zeros(channels), torch.ones(channels)
        for _ in request.seeds:
            means.append(mean)
            stds.append(std)
            strengths.append(style_strength(request.style_weight) if request.styled else 0.0)
            rows.append(request.styled)
    return StyleTarget(
        mean=torch.stack(means).view(len(means), -1, 1, 1),
        std=torch.stack(stds).view(len(stds), -1, 1, 1),
        strength=torch.tensor(strengths).view(-1, 1, 1, 1),
        rows=torch.tensor(rows),
    )


def references(request: RenderRequest) -> list[Image.Image]:
    """A request's style pictures, then the palettes of its style codes."""
    return [*request.style_images, *(style.palette(code) for code in request.style_codes)]


def reference_statistics(
    pipe: Any, pictures: Sequence[Image.Image], size: tuple[int, int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) per latent channel of the pictures' VAE latents, pooled over all of them."""
    fitted = [ImageOps.fit(p.convert("RGB"), size, Image.Resampling.LANCZOS) for p in pictures]
    pixels = pipe.image_processor.preprocess(fitted, height=size[1], width=size[0])
    latents = encode_pixels(pipe.vae, pixels).float().cpu()
    flat = latents.transpose(0, 1).flatten(1)  # (C, all pixels of all pictures)
    return flat.mean(dim=1), flat.std(dim=1)
