"""The progress preview is shaped like the grid (its cost is measured by bench/preview_bench.py)."""

from __future__ import annotations

import torch

from engine.preview import fit_latent_rgb, preview_grid


def test_preview_is_a_grid_at_latent_resolution(tiny_pipe):
    matrix = fit_latent_rgb(tiny_pipe.vae)
    assert matrix.shape == (5, 3)
    latents = torch.randn(4, 4, 8, 8)
    image = preview_grid(latents, matrix)
    assert image.size == (16, 16) and image.mode == "RGB"
