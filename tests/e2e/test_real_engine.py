"""The whole path with real diffusers: the bot, the fake Discord and a tiny SD-architecture model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fakediscord import FakeDiscord
from tests.harness import running_bot

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny_pipe():
    from engine.tiny import build_tiny_pipeline

    torch.set_num_threads(1)
    return build_tiny_pipeline(seed=0)


async def test_imagine_renders_a_real_grid_and_upscales_a_tile(fake_discord: FakeDiscord, tmp_path: Path, tiny_pipe):
    from engine.core import DiffusersEngine

    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", batch_window_s=0.0) as engine:
        async with running_bot(
            fake_discord, tmp_path, engine=engine, model="tiny", steps=12, progress_interval_s=0.5
        ) as bot:
            ix = await fake_discord.slash("imagine", prompt="a red circle on a blue background --seed 11")
            assert (await ix.ack()).elapsed < 3
            await ix.wait_for_edit(lambda m: "%" in m.content, timeout=30)
            final = await ix.wait_for_edit(lambda m: m.embeds and m.buttons and "%" not in m.content, timeout=60)

            grid = final.attachments[0].image()
            assert grid.size == (128, 128)
            tiles = [grid.crop((x, y, x + 64, y + 64)).tobytes() for y in (0, 64) for x in (0, 64)]
            assert len(set(tiles)) == 4
            assert "11 (`--seed 11` draws this again)" in str(final.embed["fields"])
            job = await bot.store.get_job(1)
            assert job.status == "done" and job.gpu_seconds > 0

            u3 = await fake_discord.click(final, label="U3")
            await u3.ack()
            tile = await u3.wait_for_followup(lambda m: m.attachments)
            up = await fake_discord.click(tile, label="Upscale (Subtle)")
            await up.ack()
            done = await up.wait_for_edit(lambda m: m.embeds and "%" not in m.content, timeout=60)
            assert done.attachments[0].image().size == (128, 128)  # the 64 px tile, exactly 2x
