"""`ENGINE=ray` end to end: a replica dies mid-render and its member still gets the grid, once."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from tests.conftest import RAY_REPLICAS
from tests.e2e.botprocess import final_deliveries, job_id_of
from tests.fakediscord import FakeDiscord
from tests.harness import running_bot, shows_result

pytest.importorskip("ray")


async def test_a_replica_killed_mid_render_costs_one_attempt_and_the_job_is_delivered_once(
    fake_discord: FakeDiscord, tmp_path: Path, ray_engine
):
    from engine.ray_engine import running_replicas

    fake = fake_discord
    async with running_bot(
        fake, tmp_path, engine=ray_engine, model="dreamgrid-tiny", steps=50, progress_interval_s=0.5, max_attempts=3
    ) as bot:
        ix = await fake.slash("imagine", prompt="a red circle on a blue background --seed 5")
        await ix.ack()
        await ix.wait_for_edit(lambda m: "%" in m.content, timeout=60)
        assert ray_engine.in_flight, "the render is streaming from a replica"
        (replica,) = ray_engine.in_flight
        os.kill(ray_engine.replicas[replica].pid, signal.SIGKILL)  # like the OOM killer or a lost host

        final = await ix.wait_for_edit(shows_result, timeout=120)
        assert final.attachments[0].image().size == (128, 128)
        job = await bot.store.get_job(job_id_of(ix))
        assert job.status == "done" and job.attempts == 2
        assert final_deliveries(fake)[job.id] == 1

    # Serve replaces the dead replica; later tests get both back.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 180
    while await asyncio.to_thread(running_replicas) < RAY_REPLICAS:
        assert loop.time() < deadline, "Serve did not replace the killed replica"
        await asyncio.sleep(1)


async def test_a_job_whose_replica_is_killed_twice_in_a_row_fails_once_with_the_member_told(
    fake_discord: FakeDiscord, tmp_path: Path, ray_engine
):
    """With MAX_ATTEMPTS=2, a render lost twice is not tried a third time: the member's message says
    so, the failure is shown once, and nothing is drawn or delivered behind it."""
    from engine.ray_engine import running_replicas

    fake = fake_discord
    loop = asyncio.get_running_loop()
    async with running_bot(
        fake, tmp_path, engine=ray_engine, model="dreamgrid-tiny", steps=50, progress_interval_s=0.5, max_attempts=2
    ) as bot:
        ix = await fake.slash("imagine", prompt="a red circle on a blue background --seed 6")
        await ix.ack()
        await ix.wait_for_edit(lambda m: "%" in m.content, timeout=60)
        killed: set[int] = set()
        told = "This job was interrupted 2 times (the worker drawing it stopped), so it was not tried again."
        for _ in range(2):
            # The render (first, then its retry) streaming from a replica we haven't killed yet.
            deadline = loop.time() + 120
            while not (live := [r for r in ray_engine.in_flight if ray_engine.replicas[r].pid not in killed]):
                if told in ix.original.content:  # the retry was lost on its own (routed to the dead one)
                    break
                assert loop.time() < deadline, "the retry never started on a replica"
                await asyncio.sleep(0.05)
            else:
                pid = ray_engine.replicas[live[0]].pid
                os.kill(pid, signal.SIGKILL)
                killed.add(pid)

        final = await ix.wait_for_edit(lambda m: told in m.content, timeout=120)
        assert not final.attachments
        job = await bot.store.get_job(job_id_of(ix))
        assert job.status == "failed" and job.attempts == 2
        assert final_deliveries(fake)[job.id] == 1

    # Serve replaces the dead replicas; later tests get both back.
    deadline = loop.time() + 240
    while await asyncio.to_thread(running_replicas) < RAY_REPLICAS:
        assert loop.time() < deadline, "Serve did not replace the killed replicas"
        await asyncio.sleep(1)
