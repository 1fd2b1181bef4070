"""/imagine end to end: the real discord.py client against the loopback fake Discord."""

from __future__ import annotations

import re
from pathlib import Path

from engine.fake import FakeEngine
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, running_bot


async def test_imagine_acknowledges_shows_progress_and_posts_the_grid(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.15)
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        ix = await fake_discord.slash("imagine", prompt="a red circle --seed 41")
        ack = await ix.ack()
        assert ack.elapsed < 3 and not ack.ephemeral
        final = await ix.wait_for_edit(lambda m: m.embeds and m.buttons, timeout=15)
        shown = [snapshot["content"] for snapshot in final.history]
        assert ack.type == 5  # deferred first, before any database work
        assert "Waiting to start" in shown[1]  # then the deferral became the job's message
        assert any(re.search(r"\(\d+%\)", content) for content in shown)  # at least one progress edit

        grid = final.attachments[0].image()
        assert grid.size == (128, 128)  # 2x the 64 px tile in each direction
        colours = {grid.getpixel((x, y)) for x in (32, 96) for y in (32, 96)}
        assert len(colours) == 4  # four distinct tiles
        embed = final.embed
        assert "41, 42, 43, 44" in str(embed["fields"])
        assert embed["image"]["url"] == f"attachment://{final.attachments[0].filename}"
        assert final.labels == ["U1", "U2", "U3", "U4", None, "V1", "V2", "V3", "V4", None]

        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at)
        assert job.status == "done"
        assert job.seeds == [41, 42, 43, 44]
        assert job.message_id == final.id
        images = await bot.store.get_images(1)
        assert [(i.idx, i.width, i.seed) for i in images] == [(1, 64, 41), (2, 64, 42), (3, 64, 43), (4, 64, 44)]
        assert all((tmp_path / i.path).exists() for i in images)


async def test_a_bad_parameter_is_an_ephemeral_one_liner_and_queues_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path) as bot:
        ix = await fake_discord.slash("imagine", prompt="a fox --chaos 150")
        await ix.ack()
        reply = await ix.wait_for_reply()
        assert ix.ephemeral and reply.ephemeral  # the public "thinking…" was removed, then the member told
        assert reply.content == "`--chaos 150` is out of range: use 0–100."
        assert await bot.store.get_job(1) is None


async def test_a_failed_render_tells_the_member_and_the_next_job_runs(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path) as bot:
        bad = await fake_discord.slash("imagine", prompt="__fail__ please")
        await bad.ack()
        failed = await bad.wait_for_edit(lambda m: "⚠" in m.content or ":warning:" in m.content)
        assert "the fake engine was told to fail" in failed.content
        good = await fake_discord.slash("imagine", prompt="a calm lake")
        await good.ack()
        await good.wait_for_edit(lambda m: m.embeds and m.buttons)
        assert [(await bot.store.get_job(i)).status for i in (1, 2)] == ["failed", "done"]


async def test_dreamgrid_sync_registers_the_commands_to_one_guild(fake_discord: FakeDiscord, tmp_path: Path):
    import asyncio
    import os
    import subprocess
    import sys

    root = Path(__file__).parents[2].absolute()  # noqa: ASYNC240 - a path computation, no I/O
    env = {**os.environ, **fake_discord.env(), "DATA_DIR": str(tmp_path), "PYTHONPATH": str(root)}
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "bot.cli", "sync", "--guild", str(fake_discord.guild.id)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert f"for guild {fake_discord.guild.id}" in done.stdout
    names = {c["name"] for c in fake_discord.guild_commands[fake_discord.guild.id].values()}
    assert {"imagine", "settings", "prefer", "show", "info", "help", "cancel", "config"} <= names
