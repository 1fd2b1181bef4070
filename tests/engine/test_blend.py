"""/blend in the engine: what a member sees in the four tiles, on both paths."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.core import TINY_MODEL, WEIGHTS_DIR
from engine.params import BLEND_STRENGTH
from engine.requests import Action, ImagePromptMethod, RenderError
from engine.training.dataset import COLOURS, Scene, render
from engine.training.evaluate import colour_shares
from tests.engine.conftest import TILE, mean_abs, request

TRAINED = WEIGHTS_DIR / TINY_MODEL / "model_index.json"

RED_CIRCLE_ON_BLUE = render(Scene("circle", "red", "blue", "large", "center"))
YELLOW_TRIANGLE_ON_GREEN = render(Scene("triangle", "yellow", "green", "large", "center"))


def blend_request(images, **overrides):
    base = dict(
        action=Action.BLEND,
        prompt="",
        blend_images=tuple(images),
        strength=BLEND_STRENGTH,
        steps=20,
        image_prompt_method=ImagePromptMethod.IMAGE_TO_IMAGE,
    )
    return request(**(base | overrides))


@pytest.mark.skipif(not TRAINED.exists(), reason="the trained dreamgrid-tiny model is not installed")
async def test_blend_of_two_scenes_gives_four_new_tiles_each_with_colours_of_both():
    from engine.core import DiffusersEngine

    sources = [RED_CIRCLE_ON_BLUE, YELLOW_TRIANGLE_ON_GREEN]
    async with DiffusersEngine(device="cpu", batch_window_s=0.0) as engine:
        result = await engine.render(blend_request(sources, seeds=(1, 2, 3, 4)))
    assert len(result.images) == 4 and all(t.size == (TILE, TILE) for t in result.images)
    shares = [colour_shares(tile, [("red", "blue"), ("yellow", "green")]) for tile in result.images]
    for tile, (red_blue, yellow_green) in zip(result.images, shares, strict=True):
        # Not a copy of either input...
        assert min(mean_abs(tile, source) for source in sources) > 10
        # ...with a trace of each picture's colours in every tile,
        assert red_blue >= 0.02 and yellow_green >= 0.02, shares
    # ...and a visible part of each in most. (On the six-shape model the third of these tiles shows
    # the first picture only as blue streaks on green, 4-6 % of it; bench/edit_bench.py: 75 % of tiles.)
    assert sum(min(pair) >= 0.05 for pair in shares) >= 3, shares


async def test_blend_takes_images_of_any_size_and_up_to_five(engine):
    sizes = [(64, 64), (96, 64), (40, 72), (64, 64), (128, 128)]
    sources = [Image.new("RGB", size, colour) for size, colour in zip(sizes, COLOURS.values(), strict=False)]
    result = await engine.render(blend_request(sources, steps=4, width=TILE + 32, height=TILE))
    assert [t.size for t in result.images] == [(TILE + 32, TILE)] * 4
    again = await engine.render(blend_request(sources, steps=4, width=TILE + 32, height=TILE))
    assert [t.tobytes() for t in again.images] == [t.tobytes() for t in result.images]


@pytest.mark.parametrize("count", [1, 6])
async def test_blend_refuses_too_few_or_too_many_images(engine, count):
    with pytest.raises(RenderError, match="2 to 5 images"):
        await engine.render(blend_request([RED_CIRCLE_ON_BLUE] * count))


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    from engine.tiny import build_tiny_pipeline, save_tiny_ip_adapter

    return save_tiny_ip_adapter(build_tiny_pipeline(seed=0).unet, tmp_path_factory.mktemp("ip") / "adapter")


async def test_with_an_ip_adapter_the_images_embeddings_steer_the_render(adapter_folder):
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    via = dict(image_prompt_method=ImagePromptMethod.IP_ADAPTER, steps=4)
    async with DiffusersEngine(
        model="tiny", pipelines={"tiny": pipe}, device="cpu", batch_window_s=0.0, ip_adapter=adapter_folder
    ) as engine:
        assert engine.image_prompt_method() is ImagePromptMethod.IP_ADAPTER
        encoded = []
        pipe.image_encoder.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
        plain_before = (await engine.render(request(seeds=(3,), steps=4))).images[0]
        first = await engine.render(blend_request([RED_CIRCLE_ON_BLUE, YELLOW_TRIANGLE_ON_GREEN], **via))
        black_white = [Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "black")]
        other = await engine.render(blend_request(black_white, **via))
        plain_after = (await engine.render(request(seeds=(3,), steps=4))).images[0]
    assert [t.size for t in first.images] == [(TILE, TILE)] * 4
    assert encoded == [2, 2]  # each blend's images went through the image encoder, together
    # Same prompt, same seeds: only the images' embeddings differ, and the tiles follow them.
    assert all(mean_abs(a, b) > 0 for a, b in zip(first.images, other.images, strict=True))
    # The adapter is switched off again afterwards: a plain render is unchanged.
    assert plain_before.tobytes() == plain_after.tobytes()


async def test_an_ip_adapter_blend_on_an_engine_without_one_fails_clearly(engine):
    via = dict(image_prompt_method=ImagePromptMethod.IP_ADAPTER, steps=4)
    with pytest.raises(RenderError, match="no IP-Adapter installed"):
        await engine.render(blend_request([RED_CIRCLE_ON_BLUE, YELLOW_TRIANGLE_ON_GREEN], **via))
