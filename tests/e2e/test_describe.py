"""/describe end to end: prompts from a picture, 1️⃣–4️⃣, Imagine all, 🔄, Apps → Describe, refusals."""

from __future__ import annotations

from pathlib import Path

from engine.fake import FAKE_PHRASINGS
from tests.e2e.test_images import picture, refused
from tests.fakediscord import FakeDiscord, Interaction, Message
from tests.harness import eventually, result_of, running_bot, shows_result

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")


async def described(ix: Interaction, timeout: float = 15) -> Message:
    """The job message a /describe posts, once it shows the prompts."""
    ack = await ix.ack()
    assert ack.ephemeral  # "Using your picture …" is for the member; the prompts are public
    message = await ix.wait_for_reply(shows_result, timeout=timeout)
    assert not message.ephemeral
    return message


async def test_describe_then_imagine_one_prompt_then_all_of_them(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        photo = fake.upload("sunset.png", picture((640, 480), (220, 120, 30)))
        message = await described(await fake.slash("describe", image=photo))

        # Four prompts, numbered as the buttons, beside our copy of the picture.
        job = await eventually(lambda: bot.store.get_job(1), lambda j: j.delivered_at)
        assert job.kind == "describe" and len(job.spec.described) == 4
        text = message.embed["description"]
        for number, prompt in zip(NUMBERS, job.spec.described, strict=True):
            assert f"{number} {prompt}" in text
        assert message.embed["thumbnail"]["url"] == f"attachment://{message.attachments[0].filename}"
        assert [b.get("emoji", {}).get("name") or b.get("label") for b in message.buttons] == [
            *NUMBERS,
            "🔄",
            "Imagine all",
        ]
        request = bot.engine.describe_requests[-1]
        assert request.seed is None and request.image.size == (72, 56)  # our copy, fitted to the model

        # 3️⃣: that prompt in the picture's aspect (640×480, fitted to 72×56: 9:7), a grid with the usual buttons.
        grid = await result_of(await fake.click(message, "dg:desc:1:3"))
        imagined = await bot.store.get_job(2)
        assert imagined.kind == "imagine" and imagined.prompt == f"{job.spec.described[2]} --ar 9:7"
        assert grid.labels[:4] == ["U1", "U2", "U3", "U4"]

        # Imagine all: four jobs at once, one per prompt.
        everything = await fake.click(message, "dg:desc:1:all")
        await everything.ack()
        made = [
            await eventually(lambda n=n: bot.store.get_job(n), lambda j: j is not None and j.delivered_at, timeout=30)
            for n in range(3, 7)
        ]
        assert [j.prompt for j in made] == [f"{p} --ar 9:7" for p in job.spec.described]
        assert all(j.kind == "imagine" for j in made)


async def test_describe_again_gives_other_phrasings_and_apps_describe_reads_a_post(fake_discord, tmp_path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        post = fake.post(files=[("cat.jpg", picture((300, 300), (40, 40, 200), fmt="JPEG"))], user=fake.bob)
        first = await described(await fake.context_menu("Describe", post))
        job = await eventually(lambda: bot.store.get_job(1), lambda j: j.delivered_at)
        assert job.spec.inputs[0].name == "cat.jpg" and len(job.spec.described) == 4

        again = await result_of(await fake.click(first, "dg:desc:1:again"))
        second = await bot.store.get_job(2)
        assert second.kind == "describe" and second.parent_id == 1
        assert not set(second.spec.described) & set(job.spec.described)  # other phrasings
        request = bot.engine.describe_requests[-1]
        assert request.seed == second.seeds[0] and request.avoid == job.spec.described
        assert "1️⃣" in again.embed["description"]

        # /show brings the prompts back, with their buttons, without describing again.
        shown = await fake.slash("show", job_id=2, user=fake.alice)
        await shown.ack()
        reply = shown.original if shown.original.embeds else await shown.wait_for_reply()
        assert reply.embed["description"] == again.embed["description"] and len(reply.buttons) == 6
        assert len(bot.engine.describe_requests) == 2
        assert len(FAKE_PHRASINGS) >= 8


async def test_bad_describe_inputs_are_refused_in_one_line(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.slash("imagine", prompt="a setup grid"))
        bot.engine.requests.clear()
        notes = fake.upload("notes.png", b"just some text, not a picture\n")
        await refused(
            fake, bot, await fake.slash("describe", image=notes), "`notes.png` isn't a PNG, JPEG, WebP or GIF picture."
        )
        words = fake.post("no picture here", user=fake.bob)
        ix = await fake.context_menu("Describe", words)
        await ix.ack()
        assert (await ix.wait_for_reply()).content == "That message has no picture to describe."
        assert bot.engine.describe_requests == [] and await bot.store.get_job(2) is None


async def test_a_picture_far_outside_what_the_describer_knows_says_so_instead_of_guessing(
    fake_discord: FakeDiscord, tmp_path: Path
):
    """Issue #24: no confident wrong prompts, and no buttons that would draw or re-ask one."""
    import io

    import numpy as np
    from PIL import Image

    from bot.messages import UNFAMILIAR

    fake = fake_discord
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = io.BytesIO()
    noise.save(data, format="PNG")
    async with running_bot(fake, tmp_path) as bot:
        message = await described(await fake.slash("describe", image=fake.upload("static.png", data.getvalue())))
        job = await eventually(lambda: bot.store.get_job(1), lambda j: j.delivered_at)
        assert job.status == "done" and job.spec.unfamiliar and job.spec.described == ()
        assert message.embed["description"] == UNFAMILIAR
        assert message.buttons == []
