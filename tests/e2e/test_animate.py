"""Animate (#27): a picture becomes a clip Discord plays, Extend lengthens it, and /animate takes
a job's image or a member's own, with --motion, --loop and an end picture."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bot.clip_files import decode_clip
from engine import params as render_params
from engine.fake import FAKE_CLIP_FRAMES, FakeEngine
from engine.requests import Action, Feature
from tests.e2e.test_edit import _u
from tests.e2e.test_images import fields, picture, upload_result
from tests.fakediscord import FakeDiscord, Message
from tests.harness import result_of, running_bot


def clip_of(message: Message):
    """The uploaded clip, decoded back: the member's player gets these frames."""
    (attachment,) = message.attachments
    assert attachment.filename.endswith(".mp4")
    return decode_clip(attachment.data)


async def test_animate_under_a_picture_plays_and_extend_lengthens_it(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a red circle on a blue background --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:2")
        assert {"Animate (Low motion)", "Animate (High motion)"} <= set(tile.labels)

        animated = await result_of(await fake.click(tile, label="Animate (High motion)"))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index) == ("animate", 1, 2)
        request = bot.engine.requests[-1]
        assert request.action is Action.ANIMATE and request.strength == render_params.MOTION_HIGH
        clip = clip_of(animated)
        assert len(clip.frames) == FAKE_CLIP_FRAMES and clip.fps == 8
        assert clip.frames[0].size == (256, 256)  # a 64 px clip is enlarged for the player
        assert fields(animated)["Clip"] == "8 frames, 1.0 s at 8 fps"
        assert fields(animated)["Motion"] == "high"
        assert animated.labels == ["Extend"]

        extended = await result_of(await fake.click(animated, label="Extend"))
        job = await bot.store.get_job(3)
        assert (job.kind, job.parent_id) == ("extend", 2)
        assert job.spec.render.strength == render_params.MOTION_HIGH  # the clip's own motion
        # It goes on from the clip's last frame (the fake's white block at the right edge) ...
        start = bot.engine.requests[-1].init_image
        assert start.getpixel((63, 0)) == (255, 255, 255)
        # ... and its clip is the first one's, then its own: 8 + 7 frames (the shared one once).
        longer = clip_of(extended)
        assert len(longer.frames) == 2 * FAKE_CLIP_FRAMES - 1
        assert fields(extended)["Clip"].startswith("15 frames")


async def test_animate_command_on_an_upload_with_loop_and_motion_in_the_prompt(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        photo = fake.upload("photo.png", picture())
        result = await upload_result(
            await fake.slash("animate", image=photo, prompt="the circle rolls away --motion high --loop")
        )
        job = await bot.store.get_job(1)
        assert job.kind == "picture_animate"
        request = bot.engine.requests[-1]
        assert request.strength == render_params.MOTION_HIGH and request.loop
        assert request.prompt == "the circle rolls away"
        clip = clip_of(result)
        # --loop: the clip ends where it began
        first, last = (frame.resize((8, 8)).getpixel((4, 4)) for frame in (clip.frames[0], clip.frames[-1]))
        assert max(abs(a - b) for a, b in zip(first, last, strict=True)) < 12


async def test_animate_ends_on_the_end_picture_and_refusals_are_one_sentence(fake_discord: FakeDiscord, tmp_path: Path):
    no_end = "LTX-Video clips cannot end on a chosen picture (`end`, --loop): its pipeline takes a first frame only"
    engine = FakeEngine(models=["fake", "plain"], step_delay_s=0.05, refusals={
        "fake": {Feature.END_FRAME: no_end},
        "plain": {Action.ANIMATE: "Animate needs a video model, and this bot has none"},
    })  # fmt: skip
    fake = fake_discord
    async with running_bot(fake, tmp_path, engine=engine, models="fake,plain") as bot:
        await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5"))
        green = fake.upload("green.png", picture(colour=(20, 200, 40)))
        refused = await fake.slash("animate", job_id=1, number=1, end=green)
        await refused.ack()
        reply = await refused.wait_for_reply(lambda m: m.ephemeral and no_end in m.content, timeout=10)
        assert reply.content.count(".") <= 2
        assert await bot.store.get_job(2) is None  # never queued

        both = await fake.slash("animate", job_id=1, number=1, loop=True, end=green)
        await both.ack()
        await both.wait_for_reply(lambda m: m.ephemeral and "not both" in m.content, timeout=10)
        in_prompt = await fake.slash("animate", job_id=1, number=1, prompt="a lighthouse --loop", end=green)
        await in_prompt.ack()  # the prompt's --loop is the same ask as the option
        await in_prompt.wait_for_reply(lambda m: m.ephemeral and "not both" in m.content, timeout=10)

        await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5 --model plain"))
        plain = await fake.slash("animate", job_id=2, number=1)
        await plain.ack()
        await plain.wait_for_reply(lambda m: m.ephemeral and "needs a video model" in m.content, timeout=10)


async def test_an_end_picture_is_the_clips_last_frame(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 5"))
        green = fake.upload("green.png", picture(colour=(20, 200, 40)))
        result = await upload_result(await fake.slash("animate", job_id=1, number=3, end=green))
        job = await bot.store.get_job(2)
        assert job.spec.end is not None and job.spec.end.name == "green.png"
        assert bot.engine.requests[-1].end_image is not None
        assert fields(result)["Ends on"] == "`green.png`"
        r, g, b = clip_of(result).frames[-1].resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        assert g > 150 and r < 80 and b < 100


async def test_a_clip_interrupted_by_a_restart_is_drawn_again_and_delivered(fake_discord: FakeDiscord, tmp_path: Path):
    """Clips are queued and recovered like every job: one running when the bot stops is queued again,
    drawn at the next start, and its member shown the clip once."""
    from tests.harness import eventually

    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a red circle --seed 5"))
        tile = await _u(fake, grid, "dg:u:1:1")
        bot.engine.step_delay_s = 5.0  # the clip is still drawing when the bot stops
        clicked = await fake.click(tile, label="Animate (Low motion)")
        await clicked.ack()
        await eventually(lambda: bot.store.get_job(2), lambda job: job is not None and job.status == "running")
    async with running_bot(fake, tmp_path) as bot:
        shown = await clicked.wait_for_edit(lambda m: bool(m.attachments) and m.embeds, timeout=20)
        job = await bot.store.get_job(2)
        assert job.status == "done"  # (a clean stop does not count as an attempt)
        assert len(clip_of(shown).frames) == FAKE_CLIP_FRAMES
