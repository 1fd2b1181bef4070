"""/imagine end to end: the real discord.py client against the loopback fake Discord."""

from __future__ import annotations

import re
from pathlib import Path

from engine.fake import FakeEngine
from engine.params import tile_seeds
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, running_bot


async def test_imagine_acknowledges_shows_progress_and_posts_the_grid(fake_discord: FakeDiscord, tmp_path: Path):
    engine = FakeEngine(models=["fake"], step_delay_s=0.15)
    async with running_bot(fake_discord, tmp_path, engine=engine) as bot:
        ix = await fake_discord.slash("imagine", prompt="a red circle --seed 41")
        ack = await ix.ack()
        assert ack.elapsed < 3 and not ack.ephemeral
        previews = []

        def shows_preview(message) -> bool:
            if message.attachments and message.attachments[0].filename == "preview.jpg":
                previews.append(message.attachments[0].image())
            return bool(previews)

        await ix.wait_for_edit(shows_preview, timeout=15)
        final = await ix.wait_for_edit(lambda m: m.embeds and m.buttons, timeout=15)
        shown = [snapshot["content"] for snapshot in final.history]
        assert ack.type == 5  # deferred first, before any database work
        assert "Waiting to start" in shown[1]  # then the deferral became the job's message
        assert any(re.search(r"\(\d+%\)", content) for content in shown)  # at least one progress edit

        grid = final.attachments[0].image()
        assert grid.size == (128, 128)  # 2x the 64 px tile in each direction
        assert previews[0].size == grid.size  # the preview at the grid's size, not the latents' (a speck)
        colours = {grid.getpixel((x, y)) for x in (32, 96) for y in (32, 96)}
        assert len(colours) == 4  # four distinct tiles
        embed = final.embed
        seeds = list(tile_seeds(41))
        assert {"name": "Seed", "value": "41 (`--seed 41` draws this again)", "inline": False} in embed["fields"]
        assert embed["image"]["url"] == f"attachment://{final.attachments[0].filename}"
        assert final.labels == ["U1", "U2", "U3", "U4", None, "V1", "V2", "V3", "V4", None]

        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at)
        assert job.status == "done"
        assert job.seeds == seeds
        assert job.message_id == final.id
        images = await bot.store.get_images(1)
        assert [(i.idx, i.width, i.seed) for i in images] == [(n, 64, seeds[n - 1]) for n in (1, 2, 3, 4)]
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


async def test_a_draft_is_fast_and_enhance_redraws_a_tile_at_full_quality(fake_discord, tmp_path):
    """Issue #23: `--draft` draws a quarter of the steps on half-side tiles; E1–E4 under it redraw one
    tile at the full steps and size, keeping its composition (image-to-image from the draft's tile)."""
    from engine import params
    from engine.fake import FakeEngine
    from engine.requests import Action
    from tests.harness import result_of, running_bot

    fake = fake_discord
    engine = FakeEngine(models=["fake"], tile_size=128)
    async with running_bot(fake, tmp_path, engine=engine, steps=20) as bot:
        draft = await result_of(await fake.slash("imagine", prompt="a lighthouse --draft --seed 3"))
        request = engine.requests[-1]
        assert (request.width, request.height, request.steps) == (64, 64, 5)
        assert draft.labels == ["U1", "U2", "U3", "U4", None, "V1", "V2", "V3", "V4", None, "E1", "E2", "E3", "E4"]

        enhanced = await result_of(await fake.click(draft, "dg:enh:1:2"))
        job = await bot.store.get_job(2)
        assert (job.kind, job.parent_id, job.parent_index, job.prompt) == ("enhance", 1, 2, "a lighthouse --seed 3")
        request = engine.requests[-1]
        assert request.action is Action.VARIATION and request.strength == params.ENHANCE
        assert (request.width, request.height) == (128, 128) and request.init_image.size == (128, 128)
        assert request.steps == params.img2img_steps(20, params.ENHANCE)
        assert enhanced.attachments[0].image().size == (128, 128)
        assert " - Enhanced" in enhanced.content and "Vary (Strong)" in enhanced.labels  # one picture, its buttons
        # Without --draft there is nothing to enhance.
        full = await result_of(await fake.slash("imagine", prompt="a lighthouse"))
        assert "E1" not in full.labels


async def test_multi_prompt_weights_are_shown_rerolled_as_recorded_and_refused_by_name(
    fake_discord: FakeDiscord, tmp_path: Path
):
    """Issue #24: `hot:: dog::-0.5` reaches the engine with its weights (the engine blends the parts'
    embeddings), the embed shows each part's weight, 🔄 draws the same parts again, and a model whose
    family cannot weigh parts refuses before anything is queued, naming the family."""
    from engine.requests import Feature
    from tests.harness import result_of

    no_parts = "Z-Image models cannot weigh the parts of a `::` multi-prompt"
    engine = FakeEngine(models=["fake", "zimage"], refusals={"zimage": {Feature.MULTI_PROMPT: no_parts}})
    async with running_bot(fake_discord, tmp_path, engine=engine, models=["zimage"]) as bot:
        grid = await result_of(await fake_discord.slash("imagine", prompt="hot:: dog::-0.5 --seed 4"))
        assert engine.requests[-1].prompt == "hot:: dog::-0.5"
        assert {"name": "Weights", "value": "hot 1 · dog −0.5", "inline": False} in grid.embed["fields"]

        await result_of(await fake_discord.click(grid, "dg:reroll:*"))
        assert engine.requests[-1].prompt == "hot:: dog::-0.5" and (await bot.store.get_job(2)).parent_id == 1

        ix = await fake_discord.slash("imagine", prompt="hot:: dog::-0.5 --model zimage")
        await ix.ack()
        assert (await ix.wait_for_reply()).content == no_parts
        ix = await fake_discord.slash("imagine", prompt="hot::1 dog::-1")
        await ix.ack()
        assert "add up to 0" in (await ix.wait_for_reply()).content
        assert len(engine.requests) == 2
