"""A cheap preview of the grid while it denoises: a linear map from latent channels to RGB.

A VAE decode per step costs ~190 ms on the tiny model; this costs a fraction of a millisecond.
The map is fitted once per model by least squares on the VAE's own encoding of a synthetic
colour image, so it fits whatever VAE the model has (SD's published factors would be wrong
for ours). The preview has the latents' resolution (tile / 8); the bot shows it scaled to the
result's display size and blurred (`bot.image_files.preview_bytes`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from engine.grid import compose_grid
from engine.vae import encode_pixels, full_precision, is_video_vae, shift_factor

if TYPE_CHECKING:  # diffusers.models, not diffusers: its lazy top level shows type checkers attribute-less dummies
    from diffusers.models import AutoencoderKL


@torch.no_grad()
def fit_latent_rgb(vae: AutoencoderKL, scaling_factor: float | None = None, size: int = 64) -> torch.Tensor:
    """Return a (channels + 1, 3) float32 CPU matrix mapping [latent, 1] to RGB in [-1, 1]."""
    g = torch.Generator().manual_seed(0)
    # Smooth random colour fields: upsampled noise covers many colours and gradients.
    coarse = torch.rand(1, 3, 4, 4, generator=g) * 2 - 1
    image = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False).clamp(-1, 1)
    if is_video_vae(vae):  # Qwen-Image's: the latents as its denoising loop holds them, mean/std-normalised
        latents = encode_pixels(vae, image).float().cpu()
    else:
        with full_precision(vae) as dtype:  # SDXL's VAE overflows in float16
            latents = vae.encode(image.to(vae.device, dtype)).latent_dist.mean.float().cpu()
        shift = shift_factor(vae)  # 0 on SD's VAEs: their previews are unchanged
        if scaling_factor is None:
            scaling_factor = float(vae.config.get("scaling_factor", 1.0))  # Flux.2's VAE normalises by batch norm
        latents = (latents - shift) * scaling_factor
    h, w = latents.shape[-2:]
    target = torch.nn.functional.adaptive_avg_pool2d(image, (h, w))
    x = torch.cat([latents[0].flatten(1), torch.ones(1, h * w)]).T  # (h*w, C+1)
    y = target[0].flatten(1).T  # (h*w, 3)
    return torch.linalg.lstsq(x, y).solution.float()


def latents_to_rgb(latents: torch.Tensor, matrix: torch.Tensor) -> np.ndarray:
    """(N, C, h, w) latents -> (N, h, w, 3) uint8."""
    lat = latents.detach().float().cpu()
    rgb = torch.einsum("nchw,ck->nhwk", lat, matrix[:-1]) + matrix[-1]
    return ((rgb.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()


def preview_grid(latents: torch.Tensor, matrix: torch.Tensor) -> Image.Image:
    """The current tiles of one request as a grid image (2x2 for four tiles)."""
    return compose_grid([Image.fromarray(a) for a in latents_to_rgb(latents, matrix)])
