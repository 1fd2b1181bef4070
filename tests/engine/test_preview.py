"""The progress preview is cheap and shaped like the grid."""

from __future__ import annotations

import time

import torch

from engine.preview import fit_latent_rgb, preview_grid


def test_preview_is_a_grid_at_latent_resolution_and_cheap(tiny_pipe):
    matrix = fit_latent_rgb(tiny_pipe.vae)
    assert matrix.shape == (5, 3)
    latents = torch.randn(4, 4, 8, 8)
    image = preview_grid(latents, matrix)
    assert image.size == (16, 16) and image.mode == "RGB"
    started = time.perf_counter()
    for _ in range(20):
        preview_grid(latents, matrix)
    assert (time.perf_counter() - started) / 20 < 0.005  # ~0.1 ms; a VAE decode is ~100x more
