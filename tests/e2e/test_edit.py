"""The edit loop a member walks: U → Zoom Out → U → Pan → Upscale → Vary (Region), across a restart.

The fake engine keeps what a mask keeps, so these tests also see that the bot asked for the right
canvas and mask: the kept part of each result is the parent's pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from engine import canvas
from engine import params as render_params
from engine.requests import Action
from tests.fakediscord import FakeDiscord, Message
from tests.harness import result_of, running_bot, shows_result

PICTURE_BUTTONS = [
    "Vary (Strong)",
    "Vary (Subtle)",
    "Vary (Region)",
    "Upscale (Subtle)",
    "Upscale (Creative)",
    "Zoom Out 2x",
    "Zoom Out 1.5x",
    "Custom Zoom",
]
ARROWS = ["⬅️", "➡️", "⬆️", "⬇️", "✉️"]


def tiles(message: Message) -> list[Image.Image]:
    from engine.grid import split_grid

    return split_grid(message.attachments[0].image().convert("RGB"))


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.int16)


async def _u(fake: FakeDiscord, grid: Message, custom_id: str) -> Message:
    ix = await fake.click(grid, custom_id)
    await ix.ack()
    return await ix.wait_for_followup(lambda m: m.attachments)


async def test_zoom_pan_upscale_and_vary_region_across_a_restart(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse at dusk --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:1")
        assert [b.get("label") or b["emoji"]["name"] for b in tile.buttons] == [
            *PICTURE_BUTTONS,
            *ARROWS,
            "Retexture",
            "Edit",
            "Animate (Low motion)",
            "Animate (High motion)",
            "❤️",
            "👎",
        ]
        assert "Make Square" not in tile.labels  # a square picture is already square
        assert all(len(c) <= 100 for c in tile.custom_ids) and len(tile.components) <= 5
        source = tile.attachments[0].image().convert("RGB")

        # Zoom Out 2x: four new pictures, the tile shrunk to half in the middle of each.
        zoomed = await result_of(await fake.click(tile, label="Zoom Out 2x"))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index, job.spec.edit.zoom) == ("zoom", 1, 1, 2.0)
        assert "Zoom Out 2x" in zoomed.content
        request = bot.engine.requests[-1]
        assert request.action is Action.OUTPAINT and request.mask_image.size == (64, 64)
        assert zoomed.attachments[0].image().size == (128, 128)
        assert zoomed.labels[:4] == ["U1", "U2", "U3", "U4"]
        shrunk = pixels(source.resize((32, 32), Image.Resampling.LANCZOS))
        for picture in tiles(zoomed):
            assert (pixels(picture)[16:48, 16:48] == shrunk).all()

    # A new process: the buttons of the old messages still work.
    async with running_bot(fake, tmp_path) as bot:
        tile = await _u(fake, zoomed, "dg:u:2:2")
        zoomed_tile = tile.attachments[0].image()

        panned = await result_of(await fake.click(tile, "dg:pan:right:2:2"))
        job = await bot.store.get_job(3)
        assert (job.kind, job.parent_id, job.parent_index, job.spec.edit.pan) == ("pan", 2, 2, "right")
        assert panned.attachments[0].image().size == (192, 128)  # tiles 96x64: half a tile wider
        for picture in tiles(panned):
            assert (pixels(picture)[:, :64] == pixels(zoomed_tile)).all()  # the left part is kept

        wide = await _u(fake, panned, "dg:u:3:1")
        assert "Make Square" in wide.labels  # 96x64 is not square

        upscaled = await result_of(await fake.click(wide, label="Upscale (Subtle)"))
        assert upscaled.attachments[0].image().size == (192, 128)
        assert "Vary (Region)" in upscaled.labels and "Zoom Out 2x" in upscaled.labels  # buttons under an upscale
        up = upscaled.attachments[0].image().convert("RGB")

        # Vary (Region): an ephemeral picture with numbered cells and a menu; two cells redrawn.
        opened = await fake.click(upscaled, "dg:region:4:1")
        picker = await opened.wait_for_reply()
        assert picker.ephemeral and picker.attachments[0].image().width >= 512
        menu = next(c for c in picker.buttons if c.get("custom_id") == "dg:cells:4:1")
        columns, rows = canvas.region_grid(192, 128)
        assert [o["value"] for o in menu["options"]][: columns * rows] == [str(n) for n in range(1, columns * rows + 1)]
        chosen = await fake.select(picker, "dg:cells:4:1", ["8", "11"])
        assert (await chosen.ack()).type == 7  # the picker turns into a note of what was chosen
        region = await chosen.wait_for_followup(shows_result, timeout=15)
        assert not region.ephemeral
        job = await bot.store.get_job(5)
        assert (job.kind, job.parent_id, job.parent_index, job.spec.edit.cells) == ("region", 4, 1, (8, 11))
        assert bot.engine.requests[-1].action is Action.INPAINT
        boxes = canvas.cell_boxes(192, 128)
        for picture in tiles(region):
            for number, (left, top, right, bottom) in enumerate(boxes, start=1):
                same = bool((pixels(picture)[top:bottom, left:right] == pixels(up)[top:bottom, left:right]).all())
                assert same is (number not in (8, 11)), number
        assert region.labels[:4] == ["U1", "U2", "U3", "U4"]


async def test_custom_zoom_takes_a_new_aspect_and_remix_is_refused_when_the_server_turned_it_off(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a harbour --seed 2"))
        tile = await _u(fake, grid, "dg:u:1:3")

        opened = await fake.click(tile, label="Custom Zoom")
        assert (await opened.ack()).type == 9
        assert opened.modal["components"][0]["components"][0]["value"] == "a harbour --seed 2 --zoom 2"
        wide = await result_of(await fake.submit_modal(opened, {"prompt": "a harbour --seed 2 --ar 2:1 --zoom 1.5"}))
        job = await bot.store.get_job(2)
        assert (job.spec.edit.zoom, job.spec.edit.aspect) == (1.5, "2:1")
        assert wide.attachments[0].image().size == (176, 96)  # 88x48 tiles: 2:1 at 64² pixels

        # 🔄 under an edit's grid: the same zoom of the same picture, new seeds.
        again = await result_of(await fake.click(wide, "dg:reroll:2"))
        job, zoomed = await bot.store.get_job(3), await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index, job.spec.edit) == ("zoom", 1, 3, zoomed.spec.edit)
        assert job.seeds != zoomed.seeds and again.attachments[0].image().size == (176, 96)

        bad = await fake.click(tile, label="Custom Zoom")
        await bad.ack()
        refused = await fake.submit_modal(bad, {"prompt": "a harbour --zoom 5"})
        await refused.ack()
        assert refused.ephemeral and "from 1 to 2" in (await refused.wait_for_reply()).content

        ix = await fake.slash("config set", key="remix_allowed", value="off", user=fake.admin)
        await ix.wait_for_reply()
        remixed = await fake.click(tile, label="Custom Zoom")
        await remixed.ack()
        refused = await fake.submit_modal(remixed, {"prompt": "a castle --seed 2 --zoom 2"})
        await refused.ack()
        assert "Remix" in (await refused.wait_for_reply()).content
        assert await bot.store.get_job(4) is None


async def test_pan_stops_at_the_servers_size_limit_and_upscale_disappears_beyond_it(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path):
        grid = await result_of(await fake.slash("imagine", prompt="a field --seed 4"))
        tile = await _u(fake, grid, "dg:u:1:1")
        ix = await fake.slash("config set", key="max_image_size", value="96", user=fake.admin)
        await ix.wait_for_reply()
        # A button shown before the limit was lowered is still checked against it.
        upscale = await fake.click(tile, label="Upscale (Subtle)")
        assert (await upscale.wait_for_reply()).content == (
            "That would make a 128×128 image: this server allows up to 96 px on a side."
        )
        panned = await result_of(await fake.click(tile, "dg:pan:left:1:1"))
        wide = await _u(fake, panned, "dg:u:2:1")
        assert wide.attachments[0].image().size == (96, 64)
        assert "Upscale (Subtle)" not in wide.labels  # 192 px would pass the server's 96
        again = await fake.click(wide, "dg:pan:right:2:1")
        await again.ack()
        reply = await again.wait_for_reply()
        assert reply.ephemeral and "96 px wide" in reply.content


async def test_an_edit_interrupted_by_a_restart_finishes_and_show_brings_back_its_buttons(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a windmill --seed 7"))
        tile = await _u(fake, grid, "dg:u:1:4")
        bot.engine.step_delay_s = 0.5
        panning = await fake.click(tile, "dg:pan:down:1:4")
        await panning.ack()
        await panning.wait_for_edit(lambda m: "%)" in m.content)  # rendering when the bot stops

    async with running_bot(fake, tmp_path) as bot:
        panned = await panning.wait_for_edit(shows_result, timeout=15)
        job = await bot.store.get_job(2)
        assert (job.kind, job.status) == ("pan", "done")  # re-queued at the stop, drawn by the new process
        request = bot.engine.requests[-1]
        assert request.action is Action.OUTPAINT and request.init_image.size == (64, 96)
        assert panned.attachments[0].image().size == (128, 192)

        shown = await fake.slash("show", job_id=2)
        await shown.ack()
        again = await shown.wait_for_reply()
        assert again.labels[:4] == ["U1", "U2", "U3", "U4"] and "Pan ⬇️" in again.content

        upscaled = await result_of(await fake.click(await _u(fake, panned, "dg:u:2:1"), label="Upscale (Creative)"))
        shown = await fake.slash("show", job_id=3)
        await shown.ack()
        assert "Vary (Region)" in (await shown.wait_for_reply()).labels
        varied = await result_of(await fake.click(upscaled, label="Vary (Subtle)"))  # from the 128x192 upscale
        assert bot.engine.requests[-1].init_image.size == (128, 192)
        assert varied.attachments[0].image().size == (256, 384)


async def test_vary_region_with_remix_opens_the_prompt_before_it_draws(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await (await fake.slash("prefer remix")).wait_for_reply()
        grid = await result_of(await fake.slash("imagine", prompt="a red kite --seed 1"))
        tile = await _u(fake, grid, "dg:u:1:2")
        opened = await fake.click(tile, "dg:region:1:2")
        picker = await opened.wait_for_reply()
        chosen = await fake.select(picker, "dg:cells:1:2", ["Everything but the middle"])
        assert (await chosen.ack()).type == 9  # the Remix modal
        region = await result_of(await fake.submit_modal(chosen, {"prompt": "a red kite in a storm --seed 1"}))
        job = await bot.store.get_job(2)
        assert job.prompt == "a red kite in a storm --seed 1"
        assert job.spec.edit.cells == (1, 2, 3, 4, 5, 8, 9, 12, 13, 14, 15, 16)
        assert bot.engine.requests[-1].prompt == "a red kite in a storm"
        assert region.labels[:4] == ["U1", "U2", "U3", "U4"]


async def test_retexture_asks_for_the_new_prompt_and_keeps_the_pictures_place(
    fake_discord: FakeDiscord, tmp_path: Path
):
    """Retexture: a new prompt on the same picture. Its editor opens even with Remix off on the server
    (the new prompt is the point of it), and the result is drawn from the tile at RETEXTURE."""
    from tests.e2e.test_admin import configure

    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await configure(fake, remix_allowed="off")
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse at dusk --ar 3:2 --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:3")
        opened = await fake.click(tile, label="Retexture")
        await opened.ack()
        assert opened.modal is not None and opened.modal["title"] == "Retexture image #3 (job 1)"
        result = await result_of(await fake.submit_modal(opened, {"prompt": "a lighthouse made of glass"}))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index, job.prompt) == (
            "retexture",
            1,
            3,
            "a lighthouse made of glass",
        )
        request = bot.engine.requests[-1]
        assert request.action is Action.VARIATION and request.strength == render_params.RETEXTURE
        assert request.prompt == "a lighthouse made of glass" and (request.width, request.height) == (80, 56)
        assert " - Retexture" in result.content and result.labels[:4] == ["U1", "U2", "U3", "U4"]


async def test_edit_asks_what_should_change_and_edits_the_picture(fake_discord: FakeDiscord, tmp_path: Path):
    """Edit (issue #23): an instruction changes the picture; the picture is the model's reference."""
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse at dusk --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:2")
        opened = await fake.click(tile, label="Edit")
        await opened.ack()
        field = opened.modal["components"][0]["components"][0]
        assert field["label"] == "What should change?" and not field.get("value")
        edited = await result_of(await fake.submit_modal(opened, {"prompt": "make it night"}))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index, job.prompt) == ("edit", 1, 2, "make it night")
        request = bot.engine.requests[-1]
        assert request.action is Action.EDIT and request.prompt == "make it night"
        assert pixels(request.init_image).tolist() == pixels(tiles(grid)[1]).tolist()  # the tile, as the reference
        assert " - Edit" in edited.content and edited.labels[:4] == ["U1", "U2", "U3", "U4"]

        # /edit takes a job's image, or a member's own picture (drawn at the family's size multiples).
        by_command = await result_of(await fake.slash("edit", instruction="add snow", job_id=1, number=3))
        assert (await bot.store.get_job(3)).kind == "edit" and by_command.attachments
        from tests.e2e.test_images import picture, upload_result

        photo = fake.upload("harbour.png", picture((200, 120), (40, 90, 160)))
        own = await upload_result(await fake.slash("edit", instruction="make it night", image=photo))
        job = await bot.store.get_job(4)
        assert job.kind == "picture_edit" and bot.engine.requests[-1].action is Action.EDIT
        assert own.attachments and own.content.startswith("**make it night** - Edit - <@")


async def test_edit_on_a_model_that_cannot_is_refused_before_asking(fake_discord: FakeDiscord, tmp_path: Path):
    from engine.fake import FakeEngine

    reason = "Stable Diffusion models cannot edit a picture from an instruction: that takes Flux.1 Kontext"
    engine = FakeEngine(models=["fake"], refusals={"fake": {Action.EDIT: reason}})
    fake = fake_discord
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:1")
        refused = await fake.click(tile, label="Edit")
        await refused.ack()
        assert refused.modal is None and (await refused.wait_for_reply()).content == f"{reason}."
        command = await fake.slash("edit", instruction="make it night", job_id=1, number=1)
        await command.ack()
        assert reason in (await command.wait_for_reply()).content
        assert await bot.store.get_job(2) is None


async def test_on_a_family_drawing_sixteens_a_new_frame_is_rounded_to_them_not_refused(
    fake_discord: FakeDiscord, tmp_path: Path
):
    """Flux-style families draw sides in multiples of 16: Custom Zoom's --ar, Make Square and Pan make
    frames in those (at 8s a 2:1 frame of 64² pixels would be 88x48, which they cannot draw)."""
    from engine.fake import FakeEngine
    from engine.requests import ModelHints

    engine = FakeEngine(models=["flux"], step_delay_s=0.05, hints={"flux": ModelHints("Flux.1", 28, 3.5, 16)})
    fake = fake_discord
    async with running_bot(fake, tmp_path, engine=engine, model="flux") as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a harbour --seed 2"))
        tile = await _u(fake, grid, "dg:u:1:1")
        opened = await fake.click(tile, label="Custom Zoom")
        await opened.ack()
        wide = await result_of(await fake.submit_modal(opened, {"prompt": "a harbour --seed 2 --ar 2:1 --zoom 1.5"}))
        assert (await bot.store.get_job(2)).spec.edit.multiple == 16
        assert wide.attachments[0].image().size == (192, 96)  # 96x48 tiles: 2:1 at 64² pixels, in 16s
        assert bot.engine.requests[-1].width == 96

        wide_tile = await _u(fake, wide, "dg:u:2:1")
        square = await result_of(await fake.click(wide_tile, label="Make Square"))
        assert square.attachments[0].image().size == (128, 128)  # 64x64: 96x48's pixel count, in 16s
        panned = await result_of(await fake.click(wide_tile, "dg:pan:up:2:1"))
        assert panned.attachments[0].image().size == (192, 160)  # half a 64 px tile taller: 96x80 tiles
        assert all(request.width % 16 == 0 and request.height % 16 == 0 for request in bot.engine.requests)
