"""Every action on every family, or a refusal naming the family before anything is queued.

The contract tests (test_contract.py) run the core actions on each family; these add what only some
families differ in: --stop, --chaos, --tile, negative prompts, blends, image prompts, Zoom Out,
a family's own defaults, and how a family is recognised from a folder.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from engine import canvas
from engine.family import (
    FLUX,
    FLUX2_KLEIN,
    FLUX_SCHNELL,
    QWEN_IMAGE,
    QWEN_IMAGE_EDIT,
    SD,
    SD3,
    SDXL,
    Z_IMAGE,
    of_pipeline,
)
from engine.loading import family_of_source, hints_for
from engine.params import BLEND_STRENGTH, VARY_STRONG
from engine.requests import Action, Feature, ImagePromptMethod, RenderError, refusal
from tests.engine.conftest import ALL_FAMILIES, TILE, mean_abs, pixels
from tests.engine.conftest import request as render_request


@pytest.fixture(params=ALL_FAMILIES)
async def family_engine(request, family_folder):
    from engine.core import DiffusersEngine

    name = request.param
    async with DiffusersEngine(
        model=name, sources={name: str(family_folder(name))}, device="cpu", batch_window_s=0.0
    ) as e:
        yield e


def test_a_folder_is_recognised_by_its_pipeline_class(family_folder, tiny_folder):
    assert family_of_source(tiny_folder) is SD
    assert family_of_source(family_folder("sd3")) is SD3
    assert family_of_source(family_folder("flux")) is FLUX
    assert family_of_source(family_folder("flux-schnell")) is FLUX_SCHNELL  # no guidance embedding
    assert family_of_source(family_folder("flux2-klein")) is FLUX2_KLEIN
    assert family_of_source(family_folder("z-image")) is Z_IMAGE
    assert family_of_source(family_folder("qwen-image")) is QWEN_IMAGE
    assert family_of_source(family_folder("qwen-image-edit")) is QWEN_IMAGE_EDIT


def test_a_family_says_what_it_cannot_do_in_a_sentence_that_names_it():
    for family in (SD, SDXL):
        drawn = (*(a for a in Action if a not in (Action.EDIT, Action.TUNE)), Feature.TILE, Feature.NEGATIVE_PROMPT)
        assert all(family.supports(what) is None for what in drawn)
        assert "Stable Diffusion" in family.supports(Action.EDIT) and "Kontext" in family.supports(Action.EDIT)
    assert SD.supports(Action.TUNE) is None  # /tune trains SD 1.x/2.x UNets only, and says so by name
    assert SDXL.supports(Action.TUNE).startswith("Stable Diffusion XL models cannot be tuned")
    assert "Flux.1 models cannot take a negative prompt" in FLUX.supports(Feature.NEGATIVE_PROMPT)
    assert "Stable Diffusion 3 models cannot draw seamless tiles" in SD3.supports(Feature.TILE)
    assert SD3.supports(Feature.NEGATIVE_PROMPT) is None  # SD3 has classifier-free guidance
    # Only Kontext and Flux.2 edit by instruction (the Edit button will ask).
    assert all(f.supports(Feature.INSTRUCTION_EDIT) is not None for f in (SD, SDXL, SD3, FLUX))
    assert FLUX2_KLEIN.supports(Feature.INSTRUCTION_EDIT) is None  # its reference images are for that
    assert "reference pictures" in FLUX2_KLEIN.supports(Action.VARIATION)


def test_a_few_step_model_runs_at_its_own_steps_and_guidance(family_folder):
    assert FLUX.hints().steps == 28 and FLUX.hints().guidance_scale == 3.5
    assert (FLUX_SCHNELL.hints().steps, FLUX_SCHNELL.hints().guidance_scale) == (4, 0.0)
    assert SD.hints().steps is None  # the bot's STEPS
    turbo = hints_for("/models/sdxl-turbo", SDXL)
    assert (turbo.steps, turbo.guidance_scale) == (4, 0.0)


async def test_refusals_are_answered_before_queueing_and_again_at_render(family_engine):
    name = family_engine.default_model
    tiled = render_request(tile=True, steps=2)
    reason = refusal(family_engine, tiled)
    assert reason is not None and family_engine.family(name).name in reason
    with pytest.raises(RenderError, match="seamless tiles"):
        await family_engine.render(tiled)
    negative = render_request(negative_prompt="blue", steps=2)
    if name in ("flux", "flux-kontext", "flux2-klein"):  # guidance-distilled
        assert "negative prompt" in refusal(family_engine, negative)
    else:
        assert refusal(family_engine, negative) is None
        assert len((await family_engine.render(negative)).images) == 4
    assert family_engine.defaults(name).family == family_engine.family(name).name


async def drawn_or_refused(engine, request):
    """The result, or None after checking the refusal is the family's sentence, said before queueing too."""
    reason = engine.supports(engine.default_model, request.action)
    if reason is None:
        return await engine.render(request)
    assert reason.startswith(engine.family().name + " models cannot")
    with pytest.raises(RenderError) as refused:
        await engine.render(request)
    assert str(refused.value) == reason
    return None


async def test_the_grid_previews_and_cancel_work_on_every_family(family_engine):
    events = []
    grid = render_request(
        seeds=(1, 2, 3, 4), steps=4, preview=True, guidance_scale=family_engine.defaults().guidance_scale or 1
    )
    first = await family_engine.render(grid, progress=events.append)
    again = await family_engine.render(grid)
    assert [im.size for im in first.images] == [(TILE, TILE)] * 4
    assert min(mean_abs(a, b) for i, a in enumerate(first.images) for b in first.images[i + 1 :]) > 1
    assert all((pixels(a) == pixels(b)).all() for a, b in zip(first.images, again.images, strict=True))
    assert [e.step for e in events] == [1, 2, 3, 4] and events[-1].preview.size == (TILE // 4, TILE // 4)


async def test_stop_shows_an_unfinished_image(family_engine):
    full = await family_engine.render(render_request(seeds=(3,), steps=10))
    early = await family_engine.render(render_request(seeds=(3,), steps=10, stop=30))
    (a,), (b,) = full.images, early.images
    assert a.size == b.size == (TILE, TILE)
    assert mean_abs(a, b) > 0.5  # unfinished: not the full render
    assert len({tuple(p) for p in np.asarray(b).reshape(-1, 3)[::7]}) > 8  # a picture, not one flat colour


async def test_chaos_spreads_tiles_and_a_tile_keeps_its_seed(family_engine):
    calm = await family_engine.render(render_request(seeds=(1, 2), steps=4))
    wild = await family_engine.render(render_request(seeds=(1, 2), steps=4, chaos=100))
    again = await family_engine.render(render_request(seeds=(1, 2), steps=4, chaos=100))
    assert all(mean_abs(c, w) > 1 for c, w in zip(calm.images, wild.images, strict=True))
    assert all((pixels(w) == pixels(x)).all() for w, x in zip(wild.images, again.images, strict=True))


async def test_blend_image_prompt_and_zoom_out_draw_on_every_family(family_engine):
    red, blue = Image.new("RGB", (TILE, TILE), "red"), Image.new("RGB", (TILE, TILE), "blue")
    method = family_engine.image_prompt_method()
    assert method is ImagePromptMethod.IMAGE_TO_IMAGE
    blend = render_request(
        action=Action.BLEND, prompt="", blend_images=(red, blue), strength=BLEND_STRENGTH, image_prompt_method=method
    )
    blended = await drawn_or_refused(family_engine, blend)
    assert blended is None or [im.size for im in blended.images] == [(TILE, TILE)] * 4
    steered = render_request(action=Action.IMAGE_PROMPT, image_prompt=red, image_prompt_method=method, steps=6)
    drawn = await drawn_or_refused(family_engine, steered)
    assert drawn is None or len(drawn.images) == 4
    source = (await family_engine.render(render_request(seeds=(11,), steps=4))).images[0]
    plan = canvas.zoom_out(TILE, TILE, 2.0)
    picture, mask = canvas.place(source, plan)
    zoom = render_request(
        action=Action.OUTPAINT,
        seeds=(1,),
        steps=4,
        init_image=picture,
        mask_image=mask,
        width=picture.width,
        height=picture.height,
    )
    zoomed = await drawn_or_refused(family_engine, zoom)
    if zoomed is None:
        return
    (out,) = zoomed.images
    left, top, right, bottom = plan.box
    inside = (slice(top + 4, bottom - 4), slice(left + 4, right - 4))  # within the kept picture, past its seam band
    assert out.size == picture.size and (pixels(out)[inside] == pixels(picture)[inside]).all()
    assert mean_abs(out.crop((0, 0, TILE, top)), picture.crop((0, 0, TILE, top))) > 1  # the border was drawn


async def test_a_variation_draws_from_its_source_on_every_family(family_engine):
    source = (await family_engine.render(render_request(seeds=(11,), steps=4))).images[0]
    vary = await drawn_or_refused(
        family_engine,
        render_request(action=Action.VARIATION, seeds=(5, 6), init_image=source, strength=VARY_STRONG, steps=6),
    )
    assert vary is None or (len(vary.images) == 2 and all(im.size == (TILE, TILE) for im in vary.images))


def test_flux_sizes_must_be_multiples_of_16(family_folder):
    from engine.tiny import build_tiny_flux_pipeline

    assert of_pipeline(build_tiny_flux_pipeline()).size_multiple == 16


@pytest.mark.parametrize(
    ("class_name", "said"),
    [
        ("QwenImageEditInpaintPipeline", "Qwen-Image-Edit inpainting"),
        ("QwenImageLayeredPipeline", "Qwen-Image-Layered"),
        ("ChromaPipeline", "Chroma"),
        ("Flux2Pipeline", "Flux.2 [dev]"),
    ],
)
async def test_a_family_not_rendered_yet_is_refused_at_startup_in_one_line(tmp_path, class_name, said):
    from engine.core import DiffusersEngine

    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "model_index.json").write_text(f'{{"_class_name": "{class_name}"}}')
    with pytest.raises(RenderError, match=rf"^{re.escape(said)} models are not supported by dreamgrid yet$"):
        async with DiffusersEngine(model=str(folder), device="cpu"):
            pass


async def test_a_flux_kontext_folder_draws_grids_and_is_ready_for_instruction_edits(tmp_path):
    from diffusers import FluxKontextPipeline

    from engine.core import DiffusersEngine
    from engine.family import FLUX_KONTEXT
    from engine.tiny import build_tiny_flux_pipeline

    folder = tmp_path / "kontext"
    FluxKontextPipeline(**build_tiny_flux_pipeline().components).save_pretrained(folder)
    assert family_of_source(folder) is FLUX_KONTEXT
    async with DiffusersEngine(model="kontext", sources={"kontext": str(folder)}, device="cpu") as engine:
        assert engine.supports("kontext", Feature.INSTRUCTION_EDIT) is None  # what the Edit button will ask
        assert "Flux.1 Kontext models cannot" in engine.supports("kontext", Action.VARIATION)
        result = await engine.render(render_request(steps=3))
        assert [im.size for im in result.images] == [(TILE, TILE)] * 4
        assert min(mean_abs(a, b) for a, b in zip(result.images, result.images[1:], strict=False)) > 1


async def test_vary_region_redraws_only_the_chosen_cells_on_every_family(family_engine):
    source = (await family_engine.render(render_request(seeds=(11,), steps=4))).images[0]
    region = render_request(
        action=Action.INPAINT,
        seeds=(1, 2),
        steps=4,
        init_image=source,
        mask_image=canvas.region_mask(TILE, TILE, (1, 5)),
        strength=1.0,
    )
    result = await drawn_or_refused(family_engine, region)
    assert result is not None  # every family here inpaints (Kontext and Flux.2 [klein] on their own pipelines)
    for image in result.images:
        for number, (left, top, right, bottom) in enumerate(canvas.cell_boxes(TILE, TILE), start=1):
            change = np.abs(pixels(image)[top:bottom, left:right] - pixels(source)[top:bottom, left:right]).mean()
            assert (change > 0) if number in (1, 5) else (change == 0), (number, change)


async def test_qwen_image_guidance_is_its_true_cfg_scale_and_its_tile_the_model_cards(family_folder):
    from engine.core import DiffusersEngine
    from tests.engine.conftest import UNetCalls

    assert QWEN_IMAGE.native_size_of_vae_config({}) == 1328  # Qwen-Image's configs say no size
    assert (QWEN_IMAGE.hints().steps, QWEN_IMAGE.hints().guidance_scale) == (50, 4.0)
    folder = str(family_folder("qwen-image"))
    async with DiffusersEngine(model="qwen", sources={"qwen": folder}, device="cpu", batch_window_s=0.0) as engine:
        assert engine.native_size() == TILE  # the tiny model's, recorded in its VAE config
        calls = UNetCalls(engine._model("qwen").text2img.transformer)
        images = []
        for guidance in (1, 4):  # its CFG is true_cfg_scale: a second transformer pass per step above 1
            calls.count = 0
            images += (await engine.render(render_request(seeds=(4,), steps=4, guidance_scale=guidance))).images
            assert calls.count == (4 if guidance == 1 else 8)
        calls.remove()
        assert mean_abs(*images) > 0
