"""Crash recovery: every accepted job ends delivered exactly once, whenever the bot dies.

The subprocess test kills the real bot with SIGKILL (twice: once with the interaction tokens
alive, once letting them expire during the downtime). The in-process tests hit the one window
a random kill rarely lands in: Discord has the result, the row does not say so yet.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from pathlib import Path

import pytest

from engine.fake import FakeEngine
from tests.e2e.botprocess import BotProcess, final_deliveries, job_id_of, settled
from tests.fakediscord import FakeDiscord, Interaction
from tests.harness import running_bot


def pings(fake: FakeDiscord) -> Counter[int]:
    """User id -> channel posts that mention (and so notify) them."""
    counted: Counter[int] = Counter()
    for rec in fake.requests_to("POST", "/channels/{channel_id}/messages"):
        if 200 <= rec.status < 300:
            for user in (rec.json.get("allowed_mentions") or {}).get("users", []):
                counted[int(user)] += 1
    return counted


async def test_sigkill_while_queued_and_rendering_loses_nothing_and_repeats_nothing(
    fake_discord: FakeDiscord, tmp_path: Path
):
    bot = BotProcess(fake_discord, tmp_path, fake_step_delay_s=0.08, max_concurrent_jobs=1)
    await bot.start()
    try:
        members = [fake_discord.alice, fake_discord.bob, fake_discord.admin]
        accepted: dict[int, Interaction] = {}
        for n in range(6):
            ix = await fake_discord.slash("imagine", prompt=f"job {n}", user=members[n % 3])
            await ix.wait_for_answer()
            accepted[job_id_of(ix)] = ix

        # Crash 1: one job rendering (a progress edit is out), the rest queued; tokens alive.
        await fake_discord.wait_for(
            lambda: any("%)" in ix.original.content for ix in accepted.values()), what="a render in progress"
        )
        await bot.kill()
        before = final_deliveries(fake_discord)
        await bot.start()

        # Crash 2: after a delivery or two, in the middle of whatever is going on; this time the
        # downtime outlasts the interaction tokens, so results must go to the channel instead.
        await fake_discord.wait_for(
            lambda: len(final_deliveries(fake_discord)) >= len(before) + 2, timeout=15, what="two more results"
        )
        await bot.kill()
        fake_discord.expire_tokens()
        await bot.start()

        await fake_discord.wait_for(
            lambda: all(settled(ix) for ix in accepted.values()), timeout=20, what="every job's result"
        )
        await bot.stop()
        delivered = final_deliveries(fake_discord)
        assert {job: delivered[job] for job in accepted} == {job: 1 for job in accepted}, "once each"
        assert set(delivered) == set(accepted)
        # Results that outlived their token were posted with one mention each, never a second.
        posted = pings(fake_discord)
        assert posted and all(n <= 2 for n in posted.values())  # 6 jobs over 3 members
        assert sum(posted.values()) == sum(
            1 for ix in accepted.values() if ix.original.content.split("\n")[-1].startswith("Finished: ")
        )
        assert not bot.errors(), bot.errors()
    finally:
        await bot.stop()


async def _until_delivered(bot, job_id: int):
    deadline = time.monotonic() + 5
    while (job := await bot.store.get_job(job_id)).delivered_at is None:
        assert time.monotonic() < deadline, f"job {job_id} was not delivered"
        await asyncio.sleep(0.02)
    return job


async def _forget_delivery(bot, job_id: int) -> None:
    """Put the row back as a crash right after Discord took the result would have left it."""
    await _until_delivered(bot, job_id)
    await bot.store._write("UPDATE jobs SET delivered_at = NULL WHERE id = ?", (job_id,))


@pytest.mark.parametrize("token_expired_meanwhile", [False, True])
async def test_a_result_discord_already_shows_is_not_shown_again_after_a_restart(
    fake_discord: FakeDiscord, tmp_path: Path, token_expired_meanwhile: bool
):
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        ix = await fake_discord.slash("imagine", prompt="shown just before the crash")
        await ix.wait_for_answer()
        await ix.wait_for_edit(lambda m: m.embeds and m.buttons)
        await _forget_delivery(bot, 1)
        if token_expired_meanwhile:  # a long render: the message was made well before the job finished
            await bot.store._write("UPDATE jobs SET finished_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+60 seconds')")
    if token_expired_meanwhile:  # the bot's own token must then read the message to see it is shown
        fake_discord.expire_tokens()
    edits = ix.original.edits
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        job = await _until_delivered(bot, 1)
        assert job.result_message_id == ix.original.id
    assert ix.original.edits == edits
    assert final_deliveries(fake_discord) == {1: 1}


async def test_a_result_posted_after_the_token_expired_is_not_posted_twice(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.05)
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        ix = await fake_discord.slash("imagine", prompt="outlives its token")
        await ix.wait_for_answer()
        fake_discord.expire_tokens()
        post = await fake_discord.wait_for_message(predicate=lambda m: m.embeds and m.buttons)
        assert "Finished: " in (await ix.wait_for_edit(lambda m: "Finished: " in m.content)).content
        await _forget_delivery(bot, 1)
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        job = await _until_delivered(bot, 1)
        assert job.result_message_id == post.id
    assert final_deliveries(fake_discord) == {1: 1}
    assert pings(fake_discord) == {fake_discord.alice.id: 1}


@pytest.mark.parametrize("queued_after_s", [0, 60])
async def test_a_message_whose_id_a_crash_lost_still_shows_the_result(
    fake_discord: FakeDiscord, tmp_path: Path, queued_after_s: int
):
    async with running_bot(fake_discord, tmp_path, engine=FakeEngine(models=["fake"], step_delay_s=1.0)) as bot:
        ix = await fake_discord.slash("imagine", prompt="announced, then the bot died")
        await ix.wait_for_answer()
        await _until_message_recorded(bot, 1)
        # As if the bot died between Discord taking "Waiting to start" and the row recording it;
        # with queued_after_s, a burst had kept the row waiting that long after the deferral.
        await bot.store._write(
            "UPDATE jobs SET message_id = NULL,"
            " created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, ? || ' seconds') WHERE id = 1",
            (f"+{queued_after_s}",),
        )
    async with running_bot(fake_discord, tmp_path, engine=FakeEngine(models=["fake"], step_delay_s=0.01)) as bot:
        job = await _until_delivered(bot, 1)
        assert job.message_id == ix.original.id
    assert ix.original.embeds and ix.original.buttons  # the member's own message shows the grid
    assert final_deliveries(fake_discord) == {1: 1}
    assert pings(fake_discord) == {}  # shown where it was announced, not posted again


async def _until_message_recorded(bot, job_id: int) -> None:
    deadline = time.monotonic() + 5
    while (await bot.store.get_job(job_id)).message_id is None:
        assert time.monotonic() < deadline, f"job {job_id}'s message was not recorded"
        await asyncio.sleep(0.02)


async def test_a_render_lost_with_its_worker_is_retried_then_failed_and_its_member_told(
    fake_discord: FakeDiscord, tmp_path: Path
):
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)  # loses every "__lost__" render, as a dying replica would
    async with running_bot(fake_discord, tmp_path, engine=engine, max_attempts=3) as bot:
        ix = await fake_discord.slash("imagine", prompt="__lost__ a red fox")
        await ix.ack()
        final = await ix.wait_for_edit(lambda m: "interrupted 3 times" in m.content, timeout=15)
        assert "not tried again" in final.content
        assert sum("__lost__" in r.prompt for r in engine.requests) == 3  # one render per attempt, no more
        job = await bot.store.get_job(job_id_of(ix))
        assert job.status == "failed" and job.attempts == 3
        assert final_deliveries(fake_discord)[job.id] == 1
