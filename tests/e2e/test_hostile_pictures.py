"""Hostile pictures through the real bot: they are refused in one line, and nobody else waits for them."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.e2e.test_images import picture
from tests.fakediscord import FakeDiscord
from tests.harness import result_of, running_bot, shows_result
from tests.test_hostile_pictures import repeated_scan_jpeg, solid_png


async def test_two_blends_of_hostile_pictures_delay_nobody_elses_grid(fake_discord: FakeDiscord, tmp_path: Path):
    """Ten JPEGs of 1,010 scans (~94 KB, ~5 s of libjpeg each) used to take every worker thread the
    bot delivers results with for half a minute; now each is refused from its bytes in a child
    process, and another member's /imagine shows its grid as if nothing were happening."""
    fake = fake_discord
    carol = fake.add_member(fake.add_user("carol"))
    hostile = repeated_scan_jpeg()
    async with running_bot(fake, tmp_path) as bot:
        blends = [
            await fake.slash(
                "blend", user=user, **{f"image{n}": fake.upload(f"scans{n}.jpg", hostile) for n in range(1, 6)}
            )
            for user in (fake.alice, fake.bob)
        ]
        loop = asyncio.get_running_loop()
        sent = loop.time()
        grid = await result_of(await fake.slash("imagine", prompt="a quiet harbour --seed 3", user=carol), timeout=30)
        waited = loop.time() - sent
        assert grid.attachments[0].image().size == (128, 128)
        # A FakeEngine grid takes about a second here; half a minute before (generous: a loaded machine).
        assert waited < 10, f"the grid took {waited:.1f} s beside the hostile pictures"
        for blend in blends:
            await blend.ack()
            reply = await blend.wait_for_reply(timeout=30)
            assert reply.ephemeral and reply.content.endswith(
                "is a JPEG of 1,010 scans; pictures may have at most 40 (re-save it)."
            ), reply.content
        assert (await bot.store.get_job(1)).kind == "imagine" and await bot.store.get_job(2) is None
        assert len(bot.engine.requests) == 1  # only the /imagine was drawn


async def test_a_members_second_blend_while_the_first_is_read_is_refused_in_one_line(
    fake_discord: FakeDiscord, tmp_path: Path
):
    """Five 7,000² PNGs take a second or more to read; a second /blend meanwhile is told to wait,
    and the first still gives its grid."""
    fake = fake_discord
    big = solid_png(7000, 7000)
    async with running_bot(fake, tmp_path) as bot:
        first = await fake.slash("blend", **{f"image{n}": fake.upload(f"big{n}.png", big) for n in range(1, 6)})
        await first.ack()
        await fake.wait_for(lambda: len(fake.cdn_downloads) >= 1, timeout=10, what="the first blend's downloads")
        second = await fake.slash(
            "blend", image1=fake.upload("a.png", picture()), image2=fake.upload("b.png", picture())
        )
        await second.ack()
        reply = await second.wait_for_reply(timeout=30)
        assert reply.ephemeral and reply.content == (
            "I'm still reading 5 of your pictures; wait for them to finish, then try again."
        ), reply.content
        grid = await first.wait_for_reply(shows_result, timeout=60)
        assert grid.attachments[0].image().size == (128, 128)
        job = await bot.store.get_job(1)
        assert job.kind == "blend" and len(job.spec.inputs) == 5 and await bot.store.get_job(2) is None
