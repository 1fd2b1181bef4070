"""Members' own images: /upscale and /variation, Apps → Upscale 2x / Vary, image prompts, and every refusal."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from bot import kinds
from engine import params as render_params
from engine.fake import FakeEngine
from engine.requests import Action, ImagePromptMethod
from tests.e2e.botprocess import BotProcess
from tests.fakediscord import FakeDiscord, Interaction, Message
from tests.harness import result_of, running_bot, shows_result
from tests.test_member_pictures import png_bomb


def picture(size=(640, 480), colour=(200, 40, 40), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, format=fmt)
    return buffer.getvalue()


async def upload_result(ix: Interaction, timeout: float = 15, *, public_ack: bool = False) -> Message:
    """The job message a command on a member's picture posts, once it shows the result.

    /upscale, /variation and the Apps menu first tell the member privately which picture they use;
    /imagine defers publicly before anything else, and its placeholder becomes the job's message.
    """
    ack = await ix.ack()
    assert ack.ephemeral is not public_ack
    result = await ix.wait_for_reply(shows_result, timeout=timeout)
    assert not result.ephemeral
    return result


def fields(message: Message) -> dict[str, str]:
    return {f["name"]: f["value"] for f in message.embed["fields"]}


async def test_upscale_command_from_a_job_and_from_an_upload(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5"))
        assert grid.attachments[0].image().size == (128, 128)

        # /upscale job_id number: exactly what U2 → Upscale (Subtle) makes.
        from_job = await result_of(await fake.slash("upscale", job_id=1, number=2))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index) == ("upscale", 1, 2)
        assert job.spec.render.strength == render_params.UPSCALE_SUBTLE
        assert from_job.attachments[0].image().size == (128, 128)  # 2x the 64 px tile
        assert fields(from_job)["From"] == "job 1, image 2"
        assert "Zoom Out 2x" in from_job.labels  # an upscale carries the edit loop (#12)

        # /upscale image: the member's picture, fitted to the model (72×56 for 640×480), then 2x.
        photo = fake.upload("photo.png", picture())
        upscaled = await upload_result(await fake.slash("upscale", image=photo, mode="creative"))
        job = await bot.store.get_job(3)
        assert (job.kind, job.parent_id, job.spec.render.strength) == (
            "picture_upscale",
            None,
            render_params.UPSCALE_CREATIVE,
        )
        assert upscaled.attachments[0].image().size == (144, 112)
        assert fields(upscaled)["Picture"] == "`photo.png`, yours"
        assert "Zoom Out 2x" in upscaled.labels and "Vary (Region)" in upscaled.labels
        assert upscaled.content.startswith("Your picture `photo.png` - Upscaled - <@")
        assert (tmp_path / job.spec.inputs[0].path).exists()  # our own copy, kept with the job
        assert fake.cdn_downloads == [photo]

    # After a restart, with the CDN link gone and the result's file lost, /show draws it again
    # from our copy of the picture.
    fake._uploads.clear()
    for row in await _images(tmp_path, 3):
        (tmp_path / row.path).unlink()
    async with running_bot(fake, tmp_path) as bot:
        shown = await fake.slash("show", job_id=3)
        await shown.ack()
        redrawn = await shown.wait_for_reply(shows_result, timeout=15)
        assert redrawn.attachments[0].image().size == (144, 112)
        assert bot.engine.requests[-1].init_image.size == (72, 56)
        assert len(fake.cdn_downloads) == 1


async def _images(data_dir: Path, job_id: int):
    from bot.store import Store

    async with Store.open(data_dir / "dreamgrid.sqlite3") as store:
        return await store.get_images(job_id)


async def test_variation_of_an_upload_with_a_prompt_gives_a_grid_with_buttons(fake_discord: FakeDiscord, tmp_path):
    fake = fake_discord
    photo = fake.upload("cat.jpg", picture((480, 640), fmt="JPEG"))
    async with running_bot(fake, tmp_path) as bot:
        ix = await fake.slash("variation", image=photo, mode="subtle", prompt="a cat in the snow --seed 9")
        varied = await upload_result(ix)
        job = await bot.store.get_job(1)
        assert (job.kind, job.prompt, job.seeds) == (
            "picture_variation",
            "a cat in the snow --seed 9",
            kinds.VARIATION_OF_PICTURE.seeds(9),
        )
        assert job.spec.render.strength == render_params.VARY_SUBTLE
        assert varied.attachments[0].image().size == (112, 144)  # four 56×72 tiles: the picture's aspect
        assert varied.labels[:4] == ["U1", "U2", "U3", "U4"]
        request = bot.engine.requests[-1]
        assert (request.action, request.init_image.size, request.prompt) == (
            Action.VARIATION,
            (56, 72),
            "a cat in the snow",
        )

    async with running_bot(fake, tmp_path) as bot:  # its buttons work after a restart
        again = await result_of(await fake.click(varied, label="V2"))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index) == ("variation", 1, 2)
        assert again.attachments[0].image().size == (112, 144)
        # 🔄 varies the same picture again, as strongly, with new seeds.
        await result_of(await fake.click(varied, "dg:reroll:1"))
        job = await bot.store.get_job(3)
        assert (job.kind, job.spec.render.strength, job.spec.inputs[0].name) == (
            "picture_variation",
            render_params.VARY_SUBTLE,
            "cat.jpg",
        )
        assert bot.engine.requests[-1].init_image.size == (56, 72)


async def test_apps_upscale_on_a_members_post_and_vary_on_our_tile(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    post = fake.post("my drawing", files=[("drawing.webp", picture((300, 300), fmt="WEBP"))], user=fake.bob)
    async with running_bot(fake, tmp_path) as bot:
        upscaled = await upload_result(await fake.context_menu("Upscale 2x", post))
        job = await bot.store.get_job(1)
        assert (job.kind, job.user_id, job.spec.inputs[0].name) == ("picture_upscale", fake.alice.id, "drawing.webp")
        assert upscaled.attachments[0].image().size == (128, 128)

        # On our own tile post, Vary works from the stored tile, as the button does.
        grid = await result_of(await fake.slash("imagine", prompt="a red bicycle"))
        u3 = await fake.click(grid, label="U3")
        await u3.ack()
        tile = await u3.wait_for_followup(lambda m: m.attachments)
        varied = await result_of(await fake.context_menu("Vary", tile))
        job = await bot.store.get_job(3)
        assert (job.kind, job.parent_id, job.parent_index) == ("variation", 2, 3)
        assert varied.labels[:4] == ["U1", "U2", "U3", "U4"]

        # A grid is four images: the member is told to pick one first.
        refused = await fake.context_menu("Upscale 2x", grid)
        assert "press U1–U4" in (await refused.wait_for_reply()).content
        assert await bot.store.get_job(4) is None


async def test_imagine_with_an_image_prompt_and_iw(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    photo = fake.upload("wide.png", picture((800, 400)))
    async with running_bot(fake, tmp_path) as bot:
        grid = await upload_result(await fake.slash("imagine", prompt="a red fox --iw 2", image=photo), public_ack=True)
        job = await bot.store.get_job(1)
        assert job.kind == "image_prompt"
        assert (job.spec.render.image_weight, job.spec.render.image_prompt_method) == (2.0, "image-to-image")
        request = bot.engine.requests[-1]
        assert (request.action, request.image_weight, request.width, request.height) == (
            Action.IMAGE_PROMPT,
            2.0,
            88,
            48,
        )
        assert request.image_prompt.size == (88, 48)  # our copy, fitted to the model's budget
        assert fields(grid)["Image prompt"] == "`wide.png` via image-to-image, --iw 2"
        assert grid.labels[:4] == ["U1", "U2", "U3", "U4"]

    fake._uploads.clear()  # the CDN link has expired: 🔄 uses our own copy
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.click(grid, "dg:reroll:1"))
        request = bot.engine.requests[-1]
        assert request.action is Action.IMAGE_PROMPT and request.image_prompt.size == (88, 48)
        # V on an image-prompt grid varies the tile, not the picture.
        await result_of(await fake.click(grid, label="V1"))
        assert bot.engine.requests[-1].action is Action.VARIATION


async def test_with_an_ip_adapter_the_embed_says_so(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=("fake",), image_prompt_method=ImagePromptMethod.IP_ADAPTER)
    async with running_bot(fake, tmp_path, engine=engine):
        grid = await upload_result(
            await fake.slash("imagine", prompt="a red fox", image=fake.upload("f.png", picture())), public_ack=True
        )
        assert fields(grid)["Image prompt"] == "`f.png` via IP-Adapter, --iw 1"
        request = engine.requests[-1]
        assert (request.image_prompt_method, request.image_weight) == (ImagePromptMethod.IP_ADAPTER, 1.0)


async def test_a_discord_attachment_url_leading_the_prompt_is_an_image_prompt(fake_discord: FakeDiscord, tmp_path):
    fake = fake_discord
    post = fake.post(files=[("sky.png", picture((256, 256), (30, 30, 220)))], user=fake.bob)
    async with running_bot(fake, tmp_path) as bot:
        url = post.attachments[0].url
        await upload_result(await fake.slash("imagine", prompt=f"{url} a blue sky"), public_ack=True)
        job = await bot.store.get_job(1)
        assert (job.prompt, job.spec.inputs[0].name) == ("a blue sky", "sky.png")


async def refused(fake: FakeDiscord, bot, ix: Interaction, expected: str) -> None:
    """One line only the member sees (/imagine's public "thinking…" is removed first), nothing queued."""
    await ix.ack()
    reply = await ix.wait_for_reply()
    assert ix.ephemeral and reply.ephemeral and reply.content == expected, reply.content
    assert bot.engine.requests == []
    assert await bot.store.get_job(2) is None  # nothing queued beyond the setup grid


async def test_every_bad_input_is_refused_in_one_line_and_queues_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    dm = fake.dm(fake.bob)
    async with running_bot(fake, tmp_path, allow_dms=True) as bot:  # job 1 is a DM: the member's own, seen nowhere else
        await result_of(await fake.slash("imagine", prompt="bob's secret", user=fake.bob, channel=dm))
        bot.engine.requests.clear()

        notes = fake.upload("notes.png", b"just some text, not a picture\n")
        expected = "`notes.png` isn't a PNG, JPEG, WebP or GIF picture."
        await refused(fake, bot, await fake.slash("upscale", image=notes), expected)

        huge = fake.upload("huge.png", picture((64, 64)), declared_size=1 << 30)
        expected = "`huge.png` is 1.0 GiB; pictures may be up to 10.0 MiB here."
        await refused(fake, bot, await fake.slash("variation", image=huge), expected)
        assert huge not in fake.cdn_downloads  # refused before a byte was downloaded

        bomb = fake.upload("bomb.png", png_bomb(20_000, 20_000))
        await refused(
            fake,
            bot,
            await fake.slash("imagine", prompt="a fox", image=bomb),
            "`bomb.png` is too large to decode; pictures may have at most 50 megapixels.",
        )

        jpeg = picture((256, 256), fmt="JPEG")
        cut = fake.upload("cut.jpg", jpeg[: len(jpeg) // 2])
        expected = "`cut.jpg` is damaged or cut short; try uploading it again."
        await refused(fake, bot, await fake.slash("upscale", image=cut), expected)

        await refused(
            fake,
            bot,
            await fake.slash("imagine", prompt="http://169.254.169.254/latest/meta-data a fox"),
            "<http://169.254.169.254/latest/meta-data> isn't a picture posted on Discord. "
            "I only read pictures posted here: use the `image` option to upload it.",
        )

        elsewhere = "https://cdn.discordapp.com/attachments/1/2/cat.png"
        await refused(
            fake,
            bot,
            await fake.slash("imagine", prompt=f"{elsewhere} a fox"),
            f"I can't find the picture <{elsewhere}> among the recent messages of this channel; "
            "use the `image` option to upload it.",
        )
        await refused(
            fake,
            bot,
            await fake.slash("upscale", job_id=1, number=1),
            "You have no job 1, and none was posted where you can see it.",
        )
        await refused(
            fake,
            bot,
            await fake.slash("upscale", job_id=1, number=5, user=fake.bob, channel=dm),
            "`number` is which image of the job, 1–4 (as on U1–U4), not 5.",
        )
        expected = "`--iw` sets how strongly a picture steers the result: add one with the `image` option."
        await refused(fake, bot, await fake.slash("imagine", prompt="a fox --iw 2"), expected)
        await refused(
            fake,
            bot,
            await fake.slash("variation"),
            "Say which image: `job_id` and `number` (1–4), or upload one with `image`.",
        )
        assert len(fake.cdn_downloads) == 3  # notes, bomb and cut were read; nothing else


async def test_an_upload_job_killed_mid_render_finishes_from_our_copy(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    bot = BotProcess(fake, tmp_path, fake_step_delay_s=0.1)
    await bot.start()
    try:
        ix = await fake.slash("upscale", image=fake.upload("photo.png", picture()))
        await ix.ack()
        await ix.wait_for_followup(lambda m: "%)" in m.content, timeout=15)  # rendering
        await bot.kill()
        fake._uploads.clear()  # the CDN link is gone, and so is the interaction by the time it is back
        fake.expire_tokens()
        await bot.start()
        result = await fake.wait_for(
            lambda: next((m for m in fake.channel_messages() if shows_result(m)), None), timeout=20, what="the result"
        )
        assert result.attachments[0].image().size == (144, 112)
        assert fields(result)["Picture"] == "`photo.png`, yours"
        assert not bot.errors(), bot.errors()
    finally:
        await bot.stop()


async def test_a_picture_redrawn_with_no_prompt_is_drawn_from_its_description(fake_discord: FakeDiscord, tmp_path):
    """Issue #24: with an empty prompt the model drew whatever it liked; now the picture is described
    first (the likeliest description, the same every time, so a redraw gives the same pixels)."""
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await upload_result(await fake.slash("variation", image=fake.upload("sky.png", picture(colour=(30, 60, 200)))))
        described = bot.engine.describe_requests[-1]
        assert described.seed is None and described.count == 1
        request = bot.engine.requests[-1]
        assert request.action is Action.VARIATION and request.prompt == "a flat #1e3cc8 picture"
        job = await bot.store.get_job(1)
        assert job.prompt == "" and job.spec.render.prompt == ""  # recorded as asked: no prompt
        # With a prompt of their own, the member's words are drawn, and nothing is described.
        count = len(bot.engine.describe_requests)
        photo = fake.upload("sky.png", picture(colour=(30, 60, 200)))
        await upload_result(await fake.slash("variation", image=photo, prompt="a stormy sky"))
        assert bot.engine.requests[-1].prompt == "a stormy sky" and len(bot.engine.describe_requests) == count
