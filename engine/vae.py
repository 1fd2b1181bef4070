"""The engine's own VAE calls (final decode, --stop's x0 decode, the preview fit, /blend's encodes,
img2img encodes of large images), made as diffusers' pipelines make theirs.

- `force_upcast`: SDXL's VAE overflows in float16 (black or NaN images), so its config asks for
  float32. diffusers' SDXL pipelines upcast around their decode; every decode of ours must too.
- `shift_factor`: SD3's and Flux's latents are shifted before scaling; SD's are not.
- Tiling: a big upscale decoded in one piece needs memory that grows with its area. Images with
  more than `TILE_ABOVE` times a tile's pixels go through diffusers' tiled encode/decode, so memory
  stays bounded by one tile. Smaller images (every grid) are never tiled: tiling costs time and
  blends seams. `prepare_pipeline` (engine/optimize.py) decides whether a VAE may tile at all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

# Tile only images with more than this many times the pixels of one tile: a 2x upscale has 4x,
# a grid tile at any aspect about 1x.
TILE_ABOVE = 2.0
# A tile is the VAE's `sample_size` (the model's native size), but never smaller than this: every
# SD1.5 model decodes 512² routinely, and smaller tiles (the shipped 64 px model) blend visibly.
MIN_TILE = 512

# Set on a VAE by engine.optimize.prepare_pipeline: may its large images be tiled?
TILING_ALLOWED = "dreamgrid_tile_large_images"


def is_video_vae(vae: Any) -> bool:
    """Qwen-Image's VAE is a 3D (video) one: its tensors carry a frame axis, (N, C, 1, H, W) for a picture."""
    return hasattr(vae, "temperal_downsample")


def spatial_factor(vae: Any) -> int:
    if is_video_vae(vae):
        return int(vae.spatial_compression_ratio)
    return int(2 ** (len(vae.config.block_out_channels) - 1))


def needs_upcast(vae: Any) -> bool:
    return vae.dtype == torch.float16 and bool(getattr(vae.config, "force_upcast", False))


@contextlib.contextmanager
def full_precision(vae: Any) -> Iterator[torch.dtype]:
    """Run the VAE in float32 inside the block when its config asks for it; yields the dtype to feed it.

    The cast is undone afterwards, as in diffusers' SDXL pipeline. Only the worker thread uses the
    VAE, so no other render sees it half-cast.
    """
    if not needs_upcast(vae):
        yield vae.dtype
        return
    # torch's own Module.to: diffusers' override logs a warning on every dtype cast.
    torch.nn.Module.to(vae, dtype=torch.float32)
    try:
        yield torch.float32
    finally:
        torch.nn.Module.to(vae, dtype=torch.float16)


def tile_size(vae: Any) -> int:
    native = getattr(vae.config, "sample_size", None) or MIN_TILE  # (Qwen-Image's VAE config has none)
    native = native[0] if isinstance(native, (list, tuple)) else native
    return max(int(native), MIN_TILE)


def is_large(vae: Any, width: int, height: int) -> bool:
    return width * height > TILE_ABOVE * tile_size(vae) ** 2


@contextlib.contextmanager
def tiled_if_large(vae: Any, width: int, height: int) -> Iterator[None]:
    """diffusers' VAE tiling for the block when the image (pixels) is large and tiling is allowed."""
    if not (getattr(vae, TILING_ALLOWED, False) and is_large(vae, width, height)) or vae.use_tiling:
        yield
        return
    if is_video_vae(vae):  # its own tiling: tiles of 256 px at a stride of 192
        vae.use_tiling = True
        try:
            yield
        finally:
            vae.use_tiling = False
        return
    factor = spatial_factor(vae)
    saved = vae.tile_sample_min_size, vae.tile_latent_min_size
    vae.tile_sample_min_size = tile_size(vae)
    vae.tile_latent_min_size = vae.tile_sample_min_size // factor
    vae.use_tiling = True
    try:
        yield
    finally:
        vae.use_tiling = False
        vae.tile_sample_min_size, vae.tile_latent_min_size = saved


def _latents_mean_std(vae: Any, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """SDXL-style per-channel latent statistics from the VAE's config, shaped to broadcast; None without."""
    mean, std = getattr(vae.config, "latents_mean", None), getattr(vae.config, "latents_std", None)
    if mean is None or std is None:
        return None
    shape = (1, like.shape[1], *([1] * (like.ndim - 2)))
    return (
        torch.tensor(mean, device=like.device, dtype=like.dtype).view(shape),
        torch.tensor(std, device=like.device, dtype=like.dtype).view(shape),
    )


def shift_factor(vae: Any) -> float:
    """SD3's and Flux's VAEs centre their latents (`shift_factor`); SD's have none (0)."""
    return float(getattr(vae.config, "shift_factor", None) or 0.0)


@torch.no_grad()
def encode_pixels(vae: Any, pixels: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1] -> latents as the UNet reads them (the distribution's mode, scaled), honouring
    force_upcast, tiling and latents_mean/std: the inverse of `decode_latents`."""
    height, width = pixels.shape[-2:]
    with full_precision(vae) as dtype, tiled_if_large(vae, width, height):
        pixels = pixels.to(vae.device, dtype)
        if is_video_vae(vae):
            latents = vae.encode(pixels.unsqueeze(2)).latent_dist.mode()[:, :, 0]
        else:
            latents = vae.encode(pixels).latent_dist.mode()
        scaling = float(getattr(vae.config, "scaling_factor", 1.0))  # (Qwen-Image's: mean/std only)
        stats = _latents_mean_std(vae, latents)
        if stats is not None:
            return (latents - stats[0]) * scaling / stats[1]
        return (latents - shift_factor(vae)) * scaling


@torch.no_grad()
def decode_latents(vae: Any, latents: torch.Tensor) -> torch.Tensor:
    """Latents (as the UNet leaves them) -> images in [-1, 1], honouring force_upcast, tiling, latents_mean/std."""
    factor = spatial_factor(vae)
    height, width = latents.shape[-2] * factor, latents.shape[-1] * factor
    with full_precision(vae) as dtype, tiled_if_large(vae, width, height):
        latents = latents.to(dtype)
        scaling = float(getattr(vae.config, "scaling_factor", 1.0))
        stats = _latents_mean_std(vae, latents)
        if stats is not None:
            latents = latents * stats[1] / scaling + stats[0]
        else:
            latents = latents / scaling + shift_factor(vae)
        if is_video_vae(vae):
            return vae.decode(latents.unsqueeze(2), return_dict=False)[0][:, :, 0]
        return vae.decode(latents, return_dict=False)[0]
