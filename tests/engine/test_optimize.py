"""Every speed switch keeps the pictures: each is rendered on CPU with it on and with everything off.

Tolerances are mean absolute differences in 8-bit levels (0-255) over every pixel of the grid:
- float32 switches (SDPA, channels-last, fused QKV, compile, static shapes) reorder floating-point
  sums and nothing else: within FLOAT32_TOLERANCE (measured: under 1e-4);
- half precision rounds every weight and activation: within HALF_TOLERANCE (measured: 0.06);
- VAE tiling blends overlapping tiles: within TILING_TOLERANCE. The test shrinks the tile to the
  tiny model's 64 px (8 latent pixels, so a quarter overlap is 2): the seams show far more than with
  the 512 px tiles used in service (measured: 4.4 levels on a 2x upscale).
On CPU the compile tests trace the UNet with dynamo and run the traced graphs with the eager backend:
they check that the UNet compiles whole (`fullgraph=True`), the wiring, warm-up and padding;
bench/gpu_bench.py compares inductor's images with the uncompiled ones on a GPU.
"""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest
import torch

import engine.vae
from engine.core import DiffusersEngine
from engine.optimize import Speedups, padded_image_count
from engine.params import UPSCALE_SUBTLE, aspect_buckets, img2img_steps, tile_size
from engine.requests import Action, RenderResult
from engine.tiny import build_tiny_pipeline
from tests.engine.conftest import TILE, pixels, request

FLOAT32_TOLERANCE = 0.05
HALF_TOLERANCE = 1.0
TILING_TOLERANCE = 6.0

EVERYTHING_OFF = Speedups(sdpa=False, channels_last=False, fuse_qkv=False, vae_tiling=False)
# Compiling traces the UNet with dynamo; the eager backend skips codegen (no C++ compiles on 2 CPU cores).
COMPILED = dataclasses.replace(EVERYTHING_OFF, compile="regional", compile_backend="eager")


async def render(speedups: Speedups, *requests, dtype: str = "fp32", pipe=None) -> list[RenderResult]:
    """Render the requests concurrently (the engine batches them) on a fresh tiny model."""
    pipe = pipe or build_tiny_pipeline(seed=0)
    async with DiffusersEngine(
        model="tiny",
        pipelines={"tiny": pipe},
        device="cpu",
        dtype=dtype,
        batch_window_s=0.5 if len(requests) > 1 else 0.0,
        speedups=speedups,
        warm_up_sizes=[(TILE, TILE)],
    ) as engine:
        return list(await asyncio.gather(*(engine.render(r) for r in requests)))


def difference(a: RenderResult, b: RenderResult) -> float:
    assert [i.size for i in a.images] == [i.size for i in b.images]
    return float(np.mean([np.abs(pixels(x) - pixels(y)).mean() for x, y in zip(a.images, b.images, strict=True)]))


@pytest.fixture(scope="module")
def unswitched() -> RenderResult:
    return asyncio.run(render(EVERYTHING_OFF, request()))[0]


@pytest.mark.parametrize(
    "speedups",
    [
        pytest.param(dataclasses.replace(EVERYTHING_OFF, sdpa=True), id="sdpa"),
        pytest.param(dataclasses.replace(EVERYTHING_OFF, channels_last=True), id="channels_last"),
        pytest.param(dataclasses.replace(EVERYTHING_OFF, sdpa=True, fuse_qkv=True), id="fuse_qkv"),
        pytest.param(COMPILED, id="compile_regional"),
        pytest.param(dataclasses.replace(COMPILED, compile="full"), id="compile_full"),
        pytest.param(Speedups(compile="regional", compile_backend="eager"), id="all_together"),
    ],
)
async def test_a_switch_renders_the_same_grid(unswitched, speedups):
    [result] = await render(speedups, request())
    assert difference(result, unswitched) <= FLOAT32_TOLERANCE


async def test_half_precision_renders_the_same_grid_within_rounding(unswitched):
    try:
        [result] = await render(EVERYTHING_OFF, request(), dtype="fp16")
    except RuntimeError as e:  # an old CPU or torch without float16 kernels
        pytest.skip(f"float16 does not run on this CPU: {e}")
    assert difference(result, unswitched) <= HALF_TOLERANCE


async def test_fused_qkv_fuses_the_unets_attention_projections():
    pipe = build_tiny_pipeline(seed=0)
    await render(Speedups(), request(steps=1), pipe=pipe)
    processors = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert processors == {"FusedAttnProcessor2_0"}
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)


async def test_static_shapes_pad_a_batch_to_a_compiled_size_and_keep_each_jobs_tiles():
    jobs = [request(seeds=(10 * i, 10 * i + 1, 10 * i + 2, 10 * i + 3)) for i in range(3)]  # 12 images
    alone = [(await render(EVERYTHING_OFF, job))[0] for job in jobs]
    pipe = build_tiny_pipeline(seed=0)
    rows = []
    pipe.unet.register_forward_pre_hook(lambda module, args: rows.append(args[0].shape[0]))
    together = await render(COMPILED, *jobs, pipe=pipe)
    # warm-up: one grid (4 images, 8 rows with guidance); then 12 images padded to 16 (32 rows)
    assert set(rows) == {8, 32}
    for batched, single in zip(together, alone, strict=True):
        assert batched.seeds == single.seeds and len(batched.images) == 4
        assert difference(batched, single) <= FLOAT32_TOLERANCE


def test_padded_batch_sizes_are_few():
    assert [padded_image_count(n, 32) for n in (1, 2, 3, 4, 5, 8, 12, 16, 20, 32)] == [1, 2, 4, 4, 8, 8, 16, 16, 32, 32]
    assert padded_image_count(12, 8) == 12  # a single request over max_batch is never split nor padded


def test_warm_up_covers_every_tile_size_a_member_can_ask_for():
    for native in (64, 512, 1024):
        buckets = aspect_buckets(native)
        for w, h in [(1, 1), (3, 2), (2, 3), (16, 9), (7, 4), (4, 1), (1, 4), (5, 4), (13, 7)]:
            assert tile_size(w, h, native) in buckets
        assert buckets[0] == (native, native)
        assert len(buckets) <= 32


async def test_a_big_upscale_decodes_tile_by_tile_and_matches_one_piece(unswitched, monkeypatch):
    monkeypatch.setattr(engine.vae, "MIN_TILE", TILE)  # tiles of the tiny model's own size: 128 px is "big"
    source = unswitched.images[0]
    steps = img2img_steps(8, UPSCALE_SUBTLE)
    upscale = request(action=Action.UPSCALE, seeds=(1,), init_image=source, strength=UPSCALE_SUBTLE, steps=steps)

    def decoder_inputs(pipe):
        seen = []
        pipe.vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
        return seen

    whole_pipe, tiled_pipe = build_tiny_pipeline(seed=0), build_tiny_pipeline(seed=0)
    whole_seen, tiled_seen = decoder_inputs(whole_pipe), decoder_inputs(tiled_pipe)
    [whole] = await render(EVERYTHING_OFF, upscale, pipe=whole_pipe)
    [tiled] = await render(dataclasses.replace(EVERYTHING_OFF, vae_tiling=True), upscale, pipe=tiled_pipe)

    assert whole.images[0].size == tiled.images[0].size == (2 * TILE, 2 * TILE)
    latent_tile = TILE // 8
    assert (2 * latent_tile, 2 * latent_tile) in whole_seen
    assert max(max(shape) for shape in tiled_seen) <= latent_tile  # memory bounded by one tile
    assert difference(tiled, whole) <= TILING_TOLERANCE


async def test_grids_are_never_tiled(monkeypatch):
    monkeypatch.setattr(engine.vae, "MIN_TILE", TILE)
    pipe = build_tiny_pipeline(seed=0)
    seen = []
    pipe.vae.decoder.register_forward_pre_hook(lambda module, args: seen.append(tuple(args[0].shape[-2:])))
    width, height = tile_size(4, 1, TILE)  # the widest grid tile: 128 x 32
    await render(Speedups(), request(width=width, height=height, steps=1), pipe=pipe)
    assert seen == [(height // 8, width // 8)]


def test_which_images_are_big_enough_to_tile():
    from types import SimpleNamespace

    def vae(native):
        return SimpleNamespace(config=SimpleNamespace(sample_size=native))

    assert not engine.vae.is_large(vae(64), 128, 128)  # the shipped model's upscale: one piece
    assert not engine.vae.is_large(vae(512), *tile_size(4, 1, 512))  # any SD1.5 grid tile
    assert engine.vae.is_large(vae(512), 1024, 1024)  # its 2x upscale
    assert engine.vae.is_large(vae(1024), *[2 * side for side in tile_size(3, 2, 1024)])  # SDXL's
