"""What a user sees from /imagine: four different tiles, a 2x2 grid, the same pixels again for the same seeds."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from engine.params import tile_seeds
from engine.requests import RenderError
from tests.engine.conftest import TILE, mean_abs, pixels, request


async def test_imagine_gives_four_distinct_tiles_and_a_2x2_grid(engine):
    result = await engine.render(request())
    assert len(result.images) == 4
    assert all(im.size == (TILE, TILE) for im in result.images)
    assert result.grid.size == (2 * TILE, 2 * TILE)
    assert result.seeds == (1, 2, 3, 4)
    assert result.model == "tiny"
    for i in range(4):
        for j in range(i):
            assert mean_abs(result.images[i], result.images[j]) > 5, (i, j)


async def test_same_request_same_pixels(engine):
    a = await engine.render(request())
    b = await engine.render(request())
    for x, y in zip(a.images, b.images, strict=True):
        assert (pixels(x) == pixels(y)).all()


async def test_neighbouring_seeds_share_no_tile(engine):
    # What `--seed 5` and `--seed 6` ask for: with tile i at N + i they shared three tiles.
    five = await engine.render(request(seeds=tile_seeds(5)))
    six = await engine.render(request(seeds=tile_seeds(6)))
    assert not set(five.seeds) & set(six.seeds)
    for a in five.images:
        for b in six.images:
            assert mean_abs(a, b) > 5


async def test_the_seed_shown_under_a_tile_draws_it_again_as_image_1(engine):
    grid = await engine.render(request(seeds=tile_seeds(5)))
    again = await engine.render(request(seeds=tile_seeds(grid.seeds[2])))  # U3's seed, typed as --seed
    assert mean_abs(grid.images[2], again.images[0]) < 1.0


async def test_a_seed_draws_the_same_tile_in_any_position(engine):
    a = await engine.render(request(seeds=(1, 2, 3, 4)))
    b = await engine.render(request(seeds=(9, 1, 8, 7)))
    # same batch size, same seed -> visually the same tile (last-bit differences allowed)
    assert mean_abs(a.images[0], b.images[1]) < 1.0
    assert mean_abs(a.images[0], b.images[0]) > 5


async def test_negative_prompt_and_guidance_change_the_picture(engine):
    base = await engine.render(request())
    negative = await engine.render(request(negative_prompt="blue square"))
    looser = await engine.render(request(guidance_scale=2.0))
    assert mean_abs(base.images[0], negative.images[0]) > 0
    assert mean_abs(base.images[0], looser.images[0]) > 0


async def test_progress_once_per_step_on_the_event_loop_with_previews(engine):
    events, threads = [], set()

    def progress(event):
        events.append(event)
        threads.add(threading.get_ident())

    await engine.render(request(steps=5, preview=True), progress=progress)
    await asyncio.sleep(0)
    assert [e.step for e in events] == [1, 2, 3, 4, 5]
    assert all(e.total == 5 for e in events)
    assert threads == {threading.get_ident()}
    assert events[-1].fraction == 1.0
    # the preview is the 2x2 grid at latent resolution
    assert events[-1].preview is not None and events[-1].preview.size == (2 * TILE // 8, 2 * TILE // 8)


async def test_no_preview_unless_asked(engine):
    events = []
    await engine.render(request(steps=2), progress=events.append)
    assert events and all(e.preview is None for e in events)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"width": 60}, "60"),
        ({"seeds": (2**32,)}, "4294967296"),
        ({"chaos": 101}, "101"),
        ({"stop": 5}, "5"),
        ({"steps": 0}, "0"),
        ({"prompt": "   "}, "prompt"),
    ],
)
async def test_bad_input_is_a_readable_render_error(engine, overrides, named):
    with pytest.raises(RenderError, match=named):
        await engine.render(request(**overrides))


async def test_unknown_model_is_refused(engine):
    with pytest.raises(RenderError, match="not installed"):
        await engine.render(request(model="nope"))


async def test_the_event_loop_keeps_ticking_during_a_render(engine):
    gaps, stop = [], asyncio.Event()

    async def ticker():
        last = time.perf_counter()
        while not stop.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await engine.render(request(steps=20, width=128, height=128))
    stop.set()
    await task
    assert gaps and max(gaps) < 0.25
