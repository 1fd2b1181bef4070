"""What every engine promises the bot, checked on the in-process engine and on `ENGINE=ray`.

The Ray engine runs two CPU replicas of the shipped model on a local Ray instance (one per test
session, see tests/conftest.py); the in-process engine runs the tiny random model, and the tiny
SD3- and Flux.1-shaped models loaded from their diffusers folders (engine/tiny.py). None is
looked into: these tests see only what the scheduler sees.
"""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
from PIL import Image

from engine import canvas
from engine.family import SD
from engine.params import UPSCALE_SUBTLE, VARY_REGION, VARY_STRONG, VARY_SUBTLE
from engine.requests import Action, DescribeRequest, Feature, ImagePromptMethod, RenderError
from tests.engine.conftest import FAMILIES, TILE, mean_abs, pixels
from tests.engine.conftest import request as render_request


@pytest.fixture(params=["diffusers", "ray", *FAMILIES])
async def engine(request, tiny_pipe, family_folder):
    if request.param == "ray":
        yield request.getfixturevalue("ray_engine")
        return
    from engine.core import DiffusersEngine

    if request.param in FAMILIES:
        name, options = request.param, {"sources": {request.param: str(family_folder(request.param))}}
    else:
        name, options = "tiny", {"pipelines": {"tiny": tiny_pipe}}
    async with DiffusersEngine(model=name, device="cpu", batch_window_s=0.2, **options) as e:
        yield e


async def test_imagine_draws_four_different_tiles_and_the_same_request_draws_them_again(engine):
    grid = render_request(seeds=(1, 2, 3, 4), steps=4)
    first, again = await engine.render(grid), await engine.render(grid)
    assert first.seeds == (1, 2, 3, 4) and first.model == engine.default_model
    assert [image.size for image in first.images] == [(TILE, TILE)] * 4
    assert min(mean_abs(a, b) for i, a in enumerate(first.images) for b in first.images[i + 1 :]) > 1
    for a, b in zip(first.images, again.images, strict=True):
        assert (pixels(a) == pixels(b)).all()
    assert engine.default_model in engine.loaded_models


async def test_variation_and_upscale_start_from_a_tile(engine):
    # A finished tile of a prompt naming shape and both colours, as a member's grid holds. A
    # half-drawn one (4 steps) is sharpened by any redraw, Subtle's as far as Strong's.
    prompt = "a red star on a blue background"
    source = (await engine.render(render_request(prompt=prompt, seeds=(11,), steps=20))).images[0]
    vary = dict(action=Action.VARIATION, prompt=prompt, seeds=(5, 6, 7, 8), init_image=source, steps=20)
    strong = await engine.render(render_request(strength=VARY_STRONG, **vary))
    subtle = await engine.render(render_request(strength=VARY_SUBTLE, **vary))
    assert [image.size for image in strong.images] == [(TILE, TILE)] * 4

    def distance(result):
        return float(np.mean([mean_abs(image, source) for image in result.images]))

    assert 1 < distance(subtle) < distance(strong)

    up = render_request(action=Action.UPSCALE, seeds=(3,), init_image=source, strength=UPSCALE_SUBTLE, steps=10)
    (image,) = (await engine.render(up)).images
    assert image.size == (2 * TILE, 2 * TILE)


async def test_vary_region_redraws_only_the_chosen_cells(engine):
    source = (await engine.render(render_request(seeds=(11,), steps=4))).images[0]
    cells = (1, 5)
    region = render_request(
        action=Action.INPAINT,
        prompt="a yellow star on a green background",
        seeds=(1, 2),
        steps=4,
        init_image=source,
        mask_image=canvas.region_mask(TILE, TILE, cells),
        strength=VARY_REGION,
    )
    result = await engine.render(region)
    for image in result.images:
        out = pixels(image)
        for number, (left, top, right, bottom) in enumerate(canvas.cell_boxes(TILE, TILE), start=1):
            change = np.abs(out[top:bottom, left:right] - pixels(source)[top:bottom, left:right]).mean()
            assert (change > 0) if number in cells else (change == 0), (number, change)


async def test_describe_offers_four_prompts_and_other_phrasings_when_asked_again(engine):
    picture = Image.new("RGB", (TILE, TILE), "blue")
    first = await engine.describe(DescribeRequest(image=picture))
    assert len(first.prompts) == 4 and len(set(first.prompts)) == 4
    assert (await engine.describe(DescribeRequest(image=picture))).prompts == first.prompts
    again = await engine.describe(DescribeRequest(image=picture, seed=1, avoid=first.prompts))
    assert len(again.prompts) == 4 and not set(again.prompts) & set(first.prompts)


def test_what_the_bot_asks_before_queueing_is_answered_without_a_render(engine):
    assert engine.native_size() == TILE
    assert engine.has_safety_checker() is False  # the tiny models ship none
    assert engine.image_prompt_method() is ImagePromptMethod.IMAGE_TO_IMAGE  # no IP-Adapter configured
    # every family here draws every action; none of them edits by instruction, and each says so by name
    drawn = (action for action in Action if action not in (Action.EDIT, Action.ANIMATE, Action.TUNE))
    assert all(engine.supports(None, action) is None for action in drawn)
    # /tune trains SD 1.x/2.x UNets in the bot's own process: elsewhere the refusal says what it needs
    tune = engine.supports(None, Action.TUNE)
    in_process_sd = type(engine).__name__ == "DiffusersEngine" and engine.defaults().family == SD.name
    assert tune is None if in_process_sd else tune and ("/tune" in tune or "tuned" in tune)
    # Animate takes a video model: none is set here, and the tiny random UNets are not the shipped one
    # (the Ray replicas run the shipped model, whose UNet the shipped motion model was trained on)
    animate = engine.supports(None, Action.ANIMATE)
    assert animate is None if type(engine).__name__ == "RayEngine" else "VIDEO_MODEL" in (animate or "")
    family = engine.defaults().family
    for edit in (Feature.INSTRUCTION_EDIT, Action.EDIT):
        refusal = engine.supports(None, edit)
        assert family and refusal and refusal.startswith(f"{family} models cannot edit a picture from an instruction")


async def test_progress_rises_from_the_first_step_to_the_last_and_carries_a_preview_when_asked(engine):
    # The in-process engine reports every step; a Ray replica the first, the last and a few between.
    plain, previewed = [], []
    await asyncio.gather(
        engine.render(render_request(steps=5, seeds=(1,)), progress=plain.append),
        engine.render(render_request(steps=6, seeds=(2,), preview=True), progress=previewed.append),
    )
    for events, total in ((plain, 5), (previewed, 6)):
        steps = [e.step for e in events]
        assert steps[0] == 1 and steps[-1] == total and steps == sorted(set(steps))
        assert {e.total for e in events} == {total}
    assert all(e.preview is None for e in plain)
    assert all(e.preview is not None and e.preview.width > 0 for e in previewed)
    assert previewed[-1].fraction == 1.0


async def test_bad_requests_are_render_errors_and_the_engine_carries_on(engine):
    with pytest.raises(RenderError, match="not installed"):
        await engine.render(render_request(model="no-such-model"))
    with pytest.raises(RenderError, match="multiple of 8"):
        await engine.render(render_request(width=TILE + 4, steps=2))
    assert len((await engine.render(render_request(steps=2))).images) == 4


async def test_compatible_requests_from_different_members_share_pipeline_calls(engine):
    # steps=7: a batch key no other test renders, so the engine waits its full batch window
    prompts = ["a red circle", "a blue square", "a green triangle", "a yellow star"]
    results = await asyncio.gather(
        *(engine.render(render_request(prompt=p, seeds=(10 * i, 10 * i + 1), steps=7)) for i, p in enumerate(prompts))
    )
    assert [r.seeds for r in results] == [(0, 1), (10, 11), (20, 21), (30, 31)]
    assert max(r.batch_size for r in results) >= 2  # four requests, at most two workers
    tiles = [image for r in results for image in r.images]
    assert min(mean_abs(a, b) for i, a in enumerate(tiles) for b in tiles[i + 1 :]) > 1


async def test_cancel_stops_the_render_and_frees_its_worker(engine):
    seen: list[tuple[float, int]] = []
    going = asyncio.Event()

    def progress(event):
        seen.append((time.monotonic(), event.step))
        if event.step >= 4:
            going.set()

    # What six short renders take on an idle engine (on the tiny transformer models a step costs
    # less than encoding the prompt, so this is not negligible there).
    started = time.monotonic()
    await asyncio.gather(*(engine.render(render_request(seeds=(i,), steps=2)) for i in range(6)))
    idle = time.monotonic() - started

    total = 150  # the most a request may ask for
    task = asyncio.create_task(engine.render(render_request(steps=total), progress=progress))
    await asyncio.wait_for(going.wait(), timeout=60)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    cancelled_at = len(seen)
    per_step = (seen[-1][0] - seen[0][0]) / (seen[-1][1] - seen[0][1])

    # Enough short renders to reach every worker: one still drawing 150 steps would hold them up.
    started = time.monotonic()
    results = await asyncio.gather(*(engine.render(render_request(seeds=(i,), steps=2)) for i in range(6)))
    elapsed = time.monotonic() - started
    assert all(len(r.images) == 1 for r in results)
    assert len(seen) == cancelled_at  # no progress after the cancel
    assert elapsed < idle + 0.5 * per_step * (total - cancelled_at), (elapsed, idle, per_step)
