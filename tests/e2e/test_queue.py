"""The queue as members meet it: fairness, limits, Cancel, timeouts, usage. Real discord.py, fake Discord."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

from engine.fake import FakeEngine
from tests.fakediscord import FakeDiscord
from tests.harness import running_bot


def _final(m) -> bool:
    return bool(m.embeds and m.buttons)


async def _eventually(check):
    """Poll an async check (5 s at most): the bot records a delivery just after Discord has it."""
    deadline = time.monotonic() + 5
    while not (result := await check()):
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)
    return result


async def _imagine(fake: FakeDiscord, prompt: str, user=None):
    ix = await fake.slash("imagine", prompt=prompt, user=user or fake.alice)
    await ix.wait_for_answer()  # "Waiting to start" or a refusal
    return ix


async def _delivered(bot, job_id: int):
    job = await bot.store.get_job(job_id)
    return job if job.delivered_at is not None else None


async def test_a_late_member_starts_before_a_flooders_third_job(fake_discord: FakeDiscord, tmp_path: Path):
    release = asyncio.Event()

    class FirstJobWaits(FakeEngine):  # holds Alice's first render until everyone has queued, however slow the CPU
        async def render(self, request, *, progress=None):
            if request.prompt == "alice 1":
                await release.wait()
            return await super().render(request, progress=progress)

    engine = FirstJobWaits(models=["fake"], step_delay_s=0.04)
    async with running_bot(fake_discord, tmp_path, engine=engine, max_concurrent_jobs=1) as bot:
        flood = [await _imagine(fake_discord, f"alice {n}") for n in range(1, 11)]
        late = await _imagine(fake_discord, "bob 1", user=fake_discord.bob)
        # Alice's first job is running; Bob has never had a turn, so he is next, whatever Alice queued.
        assert "next in line" in late.original.content
        assert "position 9" in flood[-1].original.content  # behind Alice's own 8 queued jobs
        release.set()
        await late.wait_for_edit(_final)
        await fake_discord.wait_for(lambda: len(engine.requests) >= 3, what="Alice's second job to start")
        started = [r.prompt for r in engine.requests]
        assert started[:3] == ["alice 1", "bob 1", "alice 2"]
        stats = await bot.store.user_stats(fake_discord.bob.id)
        assert stats.jobs_total == 1 and stats.gpu_seconds > 0


async def test_limits_refuse_with_the_numbers_and_queue_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path, max_concurrent_jobs=1, max_queued_per_user=2, max_queue=3) as bot:
        await _imagine(fake_discord, "__hang__ keeps the one render slot busy")
        await fake_discord.wait_for(lambda: bot.scheduler._running, what="the first job to start")
        for n in range(2):
            await _imagine(fake_discord, f"alice {n}")
        over = await fake_discord.slash("imagine", prompt="one too many", user=fake_discord.alice)
        await over.wait_for_answer()
        assert over.ephemeral
        assert (await over.wait_for_reply()).content == (
            "You already have 2 jobs waiting (the limit is 2 per member)."
            " Wait for some to finish, or cancel one with /cancel."
        )
        await _imagine(fake_discord, "bob's only job", user=fake_discord.bob)
        full = await fake_discord.slash("imagine", prompt="too late", user=fake_discord.admin)
        await full.wait_for_answer()
        assert full.ephemeral
        assert "The queue is full (3 jobs waiting across the whole bot)" in (await full.wait_for_reply()).content
        # --repeat is all or nothing: 2 more would pass Bob's limit, so neither is queued.
        repeat = await fake_discord.slash("imagine", prompt="twice --repeat 2", user=fake_discord.bob)
        await repeat.wait_for_answer()
        assert repeat.ephemeral
        assert "Nothing was queued" in (await repeat.wait_for_reply()).content
        total = (await bot.store._one("SELECT COUNT(*) FROM jobs"))[0]
        assert total == 4


async def test_the_owner_cancels_a_running_render_and_it_stops(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.3)
    async with running_bot(fake_discord, tmp_path, engine=engine, steps=40, progress_interval_s=0.5) as bot:
        ix = await _imagine(fake_discord, "a long render")
        assert ix.original.labels == ["Cancel"]  # on "Waiting to start"
        progress = await ix.wait_for_edit(lambda m: "%)" in m.content)
        assert progress.labels == ["Cancel"]  # and on the progress

        refused = await fake_discord.click(progress, "dg:cancel:*", user=fake_discord.bob)
        assert (await refused.ack()).ephemeral
        assert "Only <@" in (await refused.wait_for_reply()).content
        assert (await bot.store.get_job(1)).status == "running"

        clicked = time.monotonic()
        click = await fake_discord.click(progress, "dg:cancel:*", user=fake_discord.alice)
        await click.ack()
        cancelled = await ix.wait_for_edit(lambda m: "Cancelled" in m.content)
        assert time.monotonic() - clicked < 0.3 + 1.0  # within a step, plus the edit
        assert cancelled.buttons == [] and cancelled.attachments == []
        job = await _eventually(lambda: _delivered(bot, 1))
        assert job.status == "cancelled" and job.gpu_seconds > 0
        assert not bot.scheduler._running  # the render task is gone, not merely ignored
        edits = cancelled.edits
        await asyncio.sleep(0.7)  # no late progress edit overwrites "Cancelled"
        assert ix.original.edits == edits and "Cancelled" in ix.original.content

        again = await fake_discord.slash("cancel", job_id=1, user=fake_discord.alice)
        assert (await again.ack()).ephemeral
        assert "already finished" in (await again.wait_for_reply()).content


async def test_an_admin_cancels_a_queued_job_and_it_never_starts(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.05)
    async with running_bot(fake_discord, tmp_path, engine=engine, max_concurrent_jobs=1) as bot:
        first = await _imagine(fake_discord, "first")
        queued = await _imagine(fake_discord, "never drawn")
        assert "Waiting to start" in queued.original.content and queued.original.labels == ["Cancel"]

        refused = await fake_discord.slash("cancel", job_id=2, user=fake_discord.bob)
        assert (await refused.ack()).ephemeral
        assert "or a server admin" in (await refused.wait_for_reply()).content

        by_admin = await fake_discord.slash("cancel", job_id=2, user=fake_discord.admin)
        await by_admin.ack()
        assert (await by_admin.wait_for_reply(lambda m: "Cancelled" in m.content)).ephemeral
        gone = await queued.wait_for_edit(lambda m: "Cancelled" in m.content)
        assert gone.buttons == []
        await first.wait_for_edit(_final)
        third = await _imagine(fake_discord, "after")
        await third.wait_for_edit(_final)
        assert [r.prompt for r in engine.requests] == ["first", "after"]
        assert (await bot.store.get_job(2)).status == "cancelled"


async def test_a_hung_render_times_out_and_the_queue_goes_on(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.02)
    async with running_bot(fake_discord, tmp_path, engine=engine, job_timeout_s=0.5, max_concurrent_jobs=1) as bot:
        hung = await _imagine(fake_discord, "__hang__ forever")
        after = await _imagine(fake_discord, "a quick one")
        failed = await hung.wait_for_edit(lambda m: ":warning:" in m.content)
        assert "took longer than 0.5 seconds and was stopped" in failed.content
        assert failed.buttons == []
        await after.wait_for_edit(_final)
        job = await bot.store.get_job(1)
        assert job.status == "failed" and job.gpu_seconds >= 0.5


async def test_more_than_five_jobs_ask_first_and_nothing_is_queued_until_yes(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        # Five jobs need no question.
        five = await _imagine(fake, "a fox --repeat 5")
        assert not five.ephemeral
        await _eventually(lambda: _delivered(bot, 5))

        six = await _imagine(fake, "a {red, green, blue} fox --repeat 2")
        question = await six.wait_for_reply()
        assert question.ephemeral and "**6 jobs** (24 images)" in question.content
        assert question.labels == ["Yes", "No"]
        assert (await bot.store.user_stats(fake.alice.id)).jobs_total == 5  # nothing queued yet

        no = await fake.click(question, label="No")
        await no.ack()
        assert (await no.wait_for_response()).content == "Nothing was queued."
        assert (await bot.store.user_stats(fake.alice.id)).jobs_total == 5

        again = await (await _imagine(fake, "a {red, green, blue} fox --repeat 2")).wait_for_reply()
        yes = await fake.click(again, label="Yes")
        await yes.ack()
        await yes.wait_for_edit(lambda m: m.content == "Queued 6 jobs.")
        assert len([m for m in yes.followups if not m.ephemeral]) == 6  # each job's own message
        prompts = sorted([(await bot.store.get_job(job_id)).prompt for job_id in range(6, 12)])
        assert prompts == sorted(f"a {colour} fox" for colour in ("red", "green", "blue") for _ in range(2))


async def test_a_repeat_over_the_waiting_limit_is_refused_at_once_naming_it(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path) as bot:
        ix = await _imagine(fake_discord, "a fox --repeat 11")
        assert (await ix.wait_for_reply()).content == (
            "This would queue 11 jobs, but a member may have 10 waiting on this server. Nothing was queued."
        )
        assert (await bot.store.user_stats(fake_discord.alice.id)).jobs_total == 0


FORECAST = r"(starting any moment|starts in under a minute|starts in about \d+ min)"


async def test_waiting_members_see_their_place_move_up_with_a_forecast(fake_discord: FakeDiscord, tmp_path: Path):
    """Issue #24: "Waiting to start" says where the job is in line and, once jobs have been timed,
    when it should start; it is edited as the line moves. /queue says the same, and how long the line is."""
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.05)
    async with running_bot(fake, tmp_path, engine=engine, max_concurrent_jobs=1):
        first = await _imagine(fake, "a red fox")  # job 1 runs
        await first.wait_for_edit(_final, timeout=15)  # timed: the next forecasts know how long a job takes
        # The line stays put until the test moves it: jobs 2 and 3 end when the test says so.
        blue_fox_may_end, green_fox_may_end = engine.hold("a blue fox"), engine.hold("a green fox")
        running = await _imagine(fake, "a blue fox")  # job 2 runs
        second = await _imagine(fake, "a green fox", user=fake.bob)  # job 3 waits
        third = await _imagine(fake, "a grey fox", user=fake.bob)  # job 4 waits behind it
        assert re.search(rf"\(Waiting to start, position 2, {FORECAST}\)$", third.original.content)
        assert re.search(rf"\(Waiting to start, next in line, {FORECAST}\)$", second.original.content)

        report = await fake.slash("queue", user=fake.bob)
        await report.ack()
        text = (await report.wait_for_reply()).content
        assert re.search(rf"`3` next in line, {FORECAST}: a green fox\n`4` position 2, {FORECAST}: a grey fox", text)
        assert "**The line:** 2 waiting and 1 running here; 2 waiting in all." in text

        # Job 2 finishes and job 3 starts: job 4 is told it is next.
        blue_fox_may_end.set()
        moved = await third.wait_for_edit(lambda m: "next in line" in m.content, timeout=15)
        assert re.search(rf"\(Waiting to start, next in line, {FORECAST}\)$", moved.content)
        green_fox_may_end.set()
        for ix in (running, second, third):
            await ix.wait_for_edit(_final, timeout=20)

        report = await fake.slash("queue", user=fake.bob)
        await report.ack()
        text = (await report.wait_for_reply()).content
        assert text.startswith("You have no jobs waiting or running.")
        assert "0 waiting and 0 running here" in text
