"""SDXL: float16 without NaN (its VAE decodes in float32, as `force_upcast` asks), and diffusers' pictures.

The tiny SDXL's VAE is made to overflow the same way: its decoder's first convolution is scaled so
its activations pass float16's maximum (65504). In float32 the next normalisation brings them back.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.core import DiffusersEngine
from engine.tiny import build_tiny_sdxl_pipeline
from engine.vae import decode_latents, encode_pixels
from tests.engine.conftest import TILE, pixels, request

OVERFLOW = 1e5


def overflowing_sdxl():
    pipe = build_tiny_sdxl_pipeline(seed=0)
    with torch.no_grad():
        pipe.vae.decoder.conv_in.weight.mul_(OVERFLOW)
        pipe.vae.decoder.conv_in.bias.mul_(OVERFLOW)
    assert pipe.vae.config.force_upcast
    return pipe


def skip_without_float16() -> None:
    try:
        torch.nn.functional.conv2d(torch.ones(1, 1, 3, 3, dtype=torch.float16), torch.ones(1, 1, 1, 1).half())
    except RuntimeError as e:
        pytest.skip(f"float16 does not run on this CPU: {e}")


def test_float16_decode_of_an_sdxl_vae_has_no_nan():
    vae = overflowing_sdxl().vae
    latents = torch.randn(2, 4, TILE // 8, TILE // 8, generator=torch.Generator().manual_seed(0))
    reference = decode_latents(vae, latents)
    skip_without_float16()
    torch.nn.Module.to(vae, dtype=torch.float16)

    image = decode_latents(vae, latents.half())

    assert torch.isfinite(image).all()
    assert (image.float() - reference).abs().max() < 0.01
    assert vae.dtype == torch.float16  # upcast for the decode only, as diffusers does

    vae.register_to_config(force_upcast=False)  # the bug this guards against: decoding in float16
    assert not torch.isfinite(decode_latents(vae, latents.half())).all()


def test_float16_encode_of_an_sdxl_vae_has_no_nan():  # /blend encodes its pictures
    vae = build_tiny_sdxl_pipeline(seed=0).vae
    with torch.no_grad():
        vae.encoder.conv_in.weight.mul_(OVERFLOW)
        vae.encoder.conv_in.bias.mul_(OVERFLOW)
    images = torch.rand(2, 3, TILE, TILE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    reference = encode_pixels(vae, images)
    skip_without_float16()
    torch.nn.Module.to(vae, dtype=torch.float16)

    latents = encode_pixels(vae, images.half())

    assert torch.isfinite(latents).all() and vae.dtype == torch.float16
    assert (latents.float() - reference).abs().max() < 0.05 * reference.abs().max()
    vae.register_to_config(force_upcast=False)
    assert not torch.isfinite(encode_pixels(vae, images.half())).all()


async def test_an_sdxl_grid_in_float16_is_not_black_with_stop_and_previews():
    skip_without_float16()
    pipe = overflowing_sdxl()
    previews = []
    async with DiffusersEngine(
        model="xl", pipelines={"xl": pipe}, device="cpu", dtype=torch.float16, batch_window_s=0.0
    ) as engine:
        # --stop decodes the x0 estimate; previews come from a map fitted on the VAE's own encoding.
        result = await engine.render(
            request(steps=4, stop=50, preview=True), progress=lambda event: previews.append(event.preview)
        )
    assert engine.dtype == torch.float16 and pipe.vae.dtype == torch.float16
    for image in result.images:
        assert pixels(image).std() > 1  # a NaN decode comes out as one flat black square
    assert previews and all(np.isfinite(pixels(p)).all() and pixels(p).std() > 0 for p in previews)


async def test_an_sdxl_grid_is_the_one_diffusers_draws_for_the_same_seeds():
    """No negative prompt: SDXL's unconditional branch is zeros, as in its own pipeline."""
    pipe = build_tiny_sdxl_pipeline(seed=0)
    generators = [torch.Generator("cpu").manual_seed(seed) for seed in (1, 2, 3, 4)]
    expected = pipe(
        ["a red circle"] * 4, height=TILE, width=TILE, num_inference_steps=4, guidance_scale=7.5, generator=generators
    ).images
    async with DiffusersEngine(model="xl", pipelines={"xl": pipe}, device="cpu", batch_window_s=0.0) as engine:
        result = await engine.render(request(steps=4, seeds=(1, 2, 3, 4)))
    for ours, theirs in zip(result.images, expected, strict=True):
        assert np.abs(pixels(ours) - pixels(theirs)).mean() < 0.05
