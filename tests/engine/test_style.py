"""`--sref`: a style reference moves a grid's colours toward it without copying its layout; codes reproduce."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine import style
from engine.actions.imagine import imagine
from engine.family import FLUX, SD, SD3, SDXL
from engine.requests import Action, Feature, RenderError, RenderRequest, refusal
from tests.engine.conftest import mean_abs, pixels, request

MODEL = Path(__file__).resolve().parents[2] / "engine" / "weights" / "dreamgrid-tiny"


def split_picture(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    image = Image.new("RGB", (64, 64), bottom)
    ImageDraw.Draw(image).polygon([(0, 0), (64, 0), (0, 64)], fill=top)
    return image


def colour_distance(image: Image.Image, reference: Image.Image) -> float:
    a, b = pixels(image).reshape(-1, 3), pixels(reference).reshape(-1, 3)
    return float(np.abs(a.mean(0) - b.mean(0)).sum() + np.abs(a.std(0) - b.std(0)).sum())


def test_a_style_code_is_the_same_palette_every_time_and_codes_differ():
    assert (pixels(style.palette(42)) == pixels(style.palette(42))).all()
    assert mean_abs(style.palette(42), style.palette(43)) > 10
    with pytest.raises(ValueError, match="style code"):
        style.palette(0)


def test_only_the_unet_families_take_a_style_and_the_others_say_so():
    assert SD.supports(Feature.STYLE_REFERENCE) is None and SDXL.supports(Feature.STYLE_REFERENCE) is None
    for family in (SD3, FLUX):
        reason = family.supports(Feature.STYLE_REFERENCE)
        assert reason is not None and family.name in reason and "--sref" in reason


async def test_a_style_code_draws_the_same_tiles_again_and_changes_them(engine):
    plain = await engine.render(request())
    styled = await engine.render(request(style_codes=(7,), style_weight=500))
    again = await engine.render(request(style_codes=(7,), style_weight=500))
    other = await engine.render(request(style_codes=(8,), style_weight=500))
    for a, b in zip(styled.images, again.images, strict=True):
        assert (pixels(a) == pixels(b)).all()
    assert min(mean_abs(a, b) for a, b in zip(styled.images, plain.images, strict=True)) > 1
    assert min(mean_abs(a, b) for a, b in zip(styled.images, other.images, strict=True)) > 1


async def test_a_styled_request_in_a_batch_leaves_its_neighbours_unstyled(tiny_pipe):
    reference = split_picture((250, 20, 20), (20, 20, 250))
    alone = imagine(tiny_pipe, [request(seeds=(1,))])[0][0]
    plain, styled = imagine(tiny_pipe, [request(seeds=(1,)), request(seeds=(1,), style_images=(reference,))])
    assert mean_abs(plain[0], alone) < 0.5
    assert mean_abs(styled[0], alone) > 1


async def test_the_engine_answers_for_a_style_before_queueing(engine):
    assert refusal(engine, request(style_codes=(7,))) is None  # the tiny model is an SD UNet
    with pytest.raises(RenderError, match="style code"):
        await engine.render(request(style_codes=(0,)))


@pytest.fixture(scope="module")
def shipped():
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(MODEL), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_on_the_shipped_model_a_reference_moves_colours_toward_it_and_keeps_the_prompts_layout(shipped):
    reference = split_picture((240, 120, 190), (20, 140, 140))  # a layout none of the prompts draw
    closer, kept = [], []
    for prompt, seed in (("a red circle on a blue background", 1), ("a yellow triangle on a green background", 2)):
        asked = RenderRequest(action=Action.IMAGINE, prompt=prompt, seeds=(seed,), width=64, height=64, steps=10)
        plain = imagine(shipped, [asked])[0][0]
        # at --sw 500 (measured: 0.79x and 0.65x). At the default 100 the shipped model moves this
        # reference's colours 0.86x on average over sref_bench's prompts but 0.93x and 0.96x on these
        # two, and at 250 0.77x and 0.93x: too close to 1 to tell a move from a different seed's draw
        styled_request = RenderRequest(**{**_fields(asked), "style_images": (reference,), "style_weight": 500})
        styled = imagine(shipped, [styled_request])[0][0]
        closer.append(colour_distance(styled, reference) / colour_distance(plain, reference))
        # the composition is the prompt's: the styled tile is nearer its own unstyled tile than the reference
        kept.append(_edges(styled, plain) < _edges(styled, reference))
    assert max(closer) < 0.9, closer
    assert all(kept)


def _fields(r: RenderRequest) -> dict[str, object]:
    return {name: getattr(r, name) for name in r.__dataclass_fields__}


def _edges(a: Image.Image, b: Image.Image) -> float:
    """How differently two pictures' shapes lie: mean difference of their luminance gradients."""

    def gradient(image: Image.Image) -> np.ndarray:
        grey = np.asarray(image.convert("L"), np.float64)
        return np.hypot(np.diff(grey, axis=0)[:, :-1], np.diff(grey, axis=1)[:-1, :])

    ga, gb = gradient(a), gradient(b)
    return float(np.abs(ga / (ga.mean() + 1e-6) - gb / (gb.mean() + 1e-6)).mean())
