"""The whole button chain on the transformer families: the bot, the fake Discord and the real
DiffusersEngine on tiny SD3-, Flux.1-, Z-Image- and Qwen-Image-shaped models loaded from diffusers folders.

U → Vary (Strong) → U → Zoom Out 2x → U → Pan ➡️ → U → Vary (Region) → U → Upscale, and a request the
family cannot draw refused before it is queued, in a sentence that names the family.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from engine import canvas
from tests.fakediscord import FakeDiscord, Message
from tests.harness import result_of, running_bot, shows_result

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module", params=["sd3", "flux", "z-image", "qwen-image"])
def family(request, tmp_path_factory) -> tuple[str, Path]:
    from engine.tiny import build

    torch.set_num_threads(1)
    return request.param, build(request.param, tmp_path_factory.mktemp("e2e-families") / request.param)


def pixels(message: Message) -> np.ndarray:
    return np.asarray(message.attachments[0].image().convert("RGB"), dtype=np.int16)


async def _u(fake: FakeDiscord, grid: Message, custom_id: str) -> Message:
    ix = await fake.click(grid, custom_id)
    await ix.ack()
    return await ix.wait_for_followup(lambda m: m.attachments, timeout=30)


async def test_every_button_of_the_chain_draws_on_the_family(fake_discord: FakeDiscord, tmp_path: Path, family):
    from engine.core import DiffusersEngine

    name, folder = family
    fake = fake_discord
    async with DiffusersEngine(model=name, sources={name: str(folder)}, device="cpu", batch_window_s=0.0) as engine:
        async with running_bot(fake, tmp_path, engine=engine, model=name, progress_interval_s=0.5) as bot:
            grid = await result_of(await fake.slash("imagine", prompt="a red circle --seed 3"), timeout=60)
            assert grid.attachments[0].image().size == (128, 128)
            job = await bot.store.get_job(1)
            assert job.spec.render.steps == engine.defaults(name).steps  # the family's own defaults
            tiles = [pixels(grid)[y : y + 64, x : x + 64] for y in (0, 64) for x in (0, 64)]
            assert min(np.abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1 :]) > 1

            tile = await _u(fake, grid, "dg:u:1:1")
            varied = await result_of(await fake.click(tile, label="Vary (Strong)"), timeout=60)
            assert varied.attachments[0].image().size == (128, 128)

            tile = await _u(fake, varied, "dg:u:2:1")
            zoomed = await result_of(await fake.click(tile, label="Zoom Out 2x"), timeout=60)
            assert zoomed.attachments[0].image().size == (128, 128)

            tile = await _u(fake, zoomed, "dg:u:3:1")
            panned = await result_of(await fake.click(tile, "dg:pan:right:3:1"), timeout=60)
            assert panned.attachments[0].image().size == (192, 128)  # 96x64 tiles: half a tile wider
            for k in range(4):
                left = pixels(panned)[(k // 2) * 64 : (k // 2) * 64 + 64, (k % 2) * 96 : (k % 2) * 96 + 96]
                assert np.abs(left[8:56, 8:56] - pixels(tile)[8:56, 8:56]).max() == 0  # the kept part

            wide = await _u(fake, panned, "dg:u:4:1")
            opened = await fake.click(wide, "dg:region:4:1")
            picker = await opened.wait_for_reply()
            chosen = await fake.select(picker, "dg:cells:4:1", ["1", "2"])
            await chosen.ack()
            region = await chosen.wait_for_followup(shows_result, timeout=60)
            source = pixels(wide)
            boxes = canvas.cell_boxes(96, 64)
            for k in range(4):
                picture = pixels(region)[(k // 2) * 64 : (k // 2) * 64 + 64, (k % 2) * 96 : (k % 2) * 96 + 96]
                for number, (left, top, right, bottom) in enumerate(boxes, start=1):
                    same = bool((picture[top:bottom, left:right] == source[top:bottom, left:right]).all())
                    assert same is (number not in (1, 2)), (k, number)

            tile = await _u(fake, region, "dg:u:5:1")
            upscaled = await result_of(await fake.click(tile, label="Upscale (Subtle)"), timeout=60)
            assert upscaled.attachments[0].image().size == (192, 128)
            assert [(await bot.store.get_job(n)).status for n in range(1, 7)] == ["done"] * 6


async def test_what_the_family_cannot_draw_is_refused_before_it_is_queued(
    fake_discord: FakeDiscord, tmp_path: Path, family
):
    from engine.core import DiffusersEngine

    name, folder = family
    fake = fake_discord
    async with DiffusersEngine(model=name, sources={name: str(folder)}, device="cpu", batch_window_s=0.0) as engine:
        async with running_bot(fake, tmp_path, engine=engine, model=name) as bot:
            ix = await fake.slash("imagine", prompt="a brick wall --tile")
            await ix.ack()
            reply = await ix.wait_for_reply()
            family_name = engine.family(name).name
            assert reply.ephemeral and f"{family_name} models cannot draw seamless tiles" in reply.content
            assert await bot.store.get_job(1) is None
            if name == "flux":
                ix = await fake.slash("imagine", prompt="a garden --no people")
                await ix.ack()
                assert "cannot take a negative prompt" in (await ix.wait_for_reply()).content
                assert await bot.store.get_job(1) is None


async def test_flux2_klein_zooms_and_pans_and_says_why_it_cannot_vary(fake_discord: FakeDiscord, tmp_path: Path):
    from engine.core import DiffusersEngine
    from engine.tiny import build

    torch.set_num_threads(1)
    folder = build("flux2-klein", tmp_path / "klein")
    fake = fake_discord
    async with DiffusersEngine(
        model="klein", sources={"klein": str(folder)}, device="cpu", batch_window_s=0.0
    ) as engine:
        async with running_bot(fake, tmp_path / "bot", engine=engine, model="klein") as bot:
            grid = await result_of(await fake.slash("imagine", prompt="a red circle --seed 3"), timeout=60)
            assert (await bot.store.get_job(1)).spec.render.steps == 4  # klein's own: step-distilled
            tile = await _u(fake, grid, "dg:u:1:1")
            refused = await fake.click(tile, label="Vary (Strong)")
            await refused.ack()
            reply = await refused.wait_for_reply()
            assert reply.ephemeral and "Flux.2 [klein] models cannot make strength variations" in reply.content
            assert await bot.store.get_job(2) is None  # never queued
            zoomed = await result_of(await fake.click(tile, label="Zoom Out 2x"), timeout=60)
            assert zoomed.attachments[0].image().size == (128, 128)
            panned = await result_of(await fake.click(await _u(fake, zoomed, "dg:u:2:1"), "dg:pan:right:2:1"))
            assert panned.attachments[0].image().size == (192, 128)


async def test_edit_by_instruction_draws_on_flux_kontext_through_discord(fake_discord: FakeDiscord, tmp_path: Path):
    """Edit on a tiny Flux.1 Kontext model: U → Edit → "make it night" → four edits of that picture;
    then Zoom Out and Vary (Region) of the same picture on its inpainting pipeline."""
    from diffusers import FluxKontextPipeline

    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_flux_pipeline

    torch.set_num_threads(1)
    folder = tmp_path / "kontext"
    FluxKontextPipeline(**build_tiny_flux_pipeline().components).save_pretrained(folder)
    fake = fake_discord
    async with DiffusersEngine(model="kontext", sources={"kontext": str(folder)}, device="cpu") as engine:
        async with running_bot(fake, tmp_path / "data", engine=engine, model="kontext", steps=4) as bot:
            grid = await result_of(await fake.slash("imagine", prompt="a red circle --seed 3 --q .25"), timeout=60)
            tile = await _u(fake, grid, "dg:u:1:1")
            opened = await fake.click(tile, label="Edit")
            await opened.ack()
            edited = await result_of(await fake.submit_modal(opened, {"prompt": "make it night --q .25"}), timeout=90)
            job = await bot.store.get_job(2)
            assert (job.kind, job.status) == ("edit", "done")
            assert edited.attachments[0].image().size == (128, 128)
            tiles = [pixels(edited)[y : y + 64, x : x + 64] for y in (0, 64) for x in (0, 64)]
            assert min(np.abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1 :]) > 0
            # Vary (Strong) is not for Kontext: refused in its own words, before anything is queued.
            refused = await fake.click(tile, label="Vary (Strong)")
            await refused.ack()
            assert "Flux.1 Kontext models cannot" in (await refused.wait_for_reply()).content
            # Zoom Out and Vary (Region) draw on FluxKontextInpaintPipeline, the kept part kept.
            zoomed = await result_of(await fake.click(tile, label="Zoom Out 2x"), timeout=90)
            assert zoomed.attachments[0].image().size == (128, 128)
            opened = await fake.click(tile, "dg:region:1:1")
            picker = await opened.wait_for_reply()
            chosen = await fake.select(picker, "dg:cells:1:1", ["1", "2"])
            await chosen.ack()
            region = await chosen.wait_for_followup(shows_result, timeout=90)
            source = pixels(tile)
            boxes = canvas.cell_boxes(64, 64)
            for k in range(4):
                picture = pixels(region)[(k // 2) * 64 : (k // 2) * 64 + 64, (k % 2) * 64 : (k % 2) * 64 + 64]
                for number, (left, top, right, bottom) in enumerate(boxes, start=1):
                    same = bool((picture[top:bottom, left:right] == source[top:bottom, left:right]).all())
                    assert same is (number not in (1, 2)), (k, number)


async def test_edit_by_instruction_draws_on_qwen_image_edit_through_discord(fake_discord: FakeDiscord, tmp_path: Path):
    """Qwen-Image-Edit through Discord: /edit on a member's own picture, then Edit under one of the
    results; /imagine, which it cannot draw (its pipelines always take a picture), is refused in its name."""
    from engine.core import DiffusersEngine
    from engine.tiny import build
    from tests.e2e.test_images import picture, upload_result

    torch.set_num_threads(1)
    folder = build("qwen-image-edit", tmp_path / "qwen-edit")
    fake = fake_discord
    async with DiffusersEngine(model="qwen-edit", sources={"qwen-edit": str(folder)}, device="cpu") as engine:
        async with running_bot(fake, tmp_path / "data", engine=engine, model="qwen-edit") as bot:
            ix = await fake.slash("imagine", prompt="a red circle")
            await ix.ack()
            reply = await ix.wait_for_reply()
            assert reply.ephemeral and "Qwen-Image-Edit models cannot draw from a prompt alone" in reply.content
            assert await bot.store.get_job(1) is None

            photo = fake.upload("harbour.png", picture((96, 64), (40, 90, 160)))
            own = await upload_result(
                await fake.slash("edit", instruction="make it night --q .25", image=photo), timeout=300
            )
            job = await bot.store.get_job(1)
            assert (job.kind, job.status) == ("picture_edit", "done")
            assert own.attachments[0].image().size == (160, 96)  # 80x48 tiles: the picture fitted to the model
            tiles = [pixels(own)[y : y + 48, x : x + 80] for y in (0, 48) for x in (0, 80)]
            assert min(np.abs(a - b).mean() for i, a in enumerate(tiles) for b in tiles[i + 1 :]) > 0

            tile = await _u(fake, own, "dg:u:1:2")
            opened = await fake.click(tile, label="Edit")
            await opened.ack()
            again = await result_of(await fake.submit_modal(opened, {"prompt": "add snow --q .25"}), timeout=300)
            assert ((await bot.store.get_job(2)).kind, again.attachments[0].image().size) == ("edit", (160, 96))
            refused = await fake.click(tile, label="Vary (Strong)")
            await refused.ack()
            assert "Qwen-Image-Edit models cannot make strength variations" in (await refused.wait_for_reply()).content
