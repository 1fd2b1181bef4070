"""A member's own commands: /settings, /prefer, /show, /info, /help."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from bot.rows import NewJob
from bot.store import QueueLimits
from engine.params import tile_seeds
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, result_of, running_bot


async def reply_to(fake: FakeDiscord, command: str, **options):
    ix = await fake.slash(command, **options)
    assert (await ix.ack()).elapsed < 3
    return ix, await ix.wait_for_reply()


async def test_settings_menus_change_the_next_imagine(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        ix, panel = await reply_to(fake, "settings")
        assert ix.ephemeral and panel.embed["title"] == "Your settings"
        picked = await fake.select(panel, "dg:set:aspect", ["16:9"])
        assert (await picked.ack()).type == 7  # the panel updates in place
        assert "16:9" in str(panel.embed["fields"])
        await (await fake.select(panel, "dg:set:quality", [".5"])).ack()

        await result_of(await fake.slash("imagine", prompt="a wide valley"))
        request = bot.engine.requests[-1]
        assert request.width > request.height  # 16:9 from /settings
        assert request.steps == 4  # --q .5 of STEPS=8
        await result_of(await fake.slash("imagine", prompt="a tall tower --ar 1:2"))
        assert bot.engine.requests[-1].height > bot.engine.requests[-1].width  # the prompt wins

        reset = await fake.click(panel, "dg:set:reset")
        await reset.ack()
        assert (await bot.store.profile(fake.alice.id)).settings == {}


async def test_prefer_suffix_and_options_expand_in_prompts(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        _, said = await reply_to(fake, "prefer suffix", value="--chaos 20")
        assert "--chaos 20" in said.content
        _, said = await reply_to(fake, "prefer option set", option="wide", value="--ar 2:1 --no people")
        assert "`--wide`" in said.content
        _, listed = await reply_to(fake, "prefer option list")
        assert "--wide" in listed.content

        await result_of(await fake.slash("imagine", prompt="a harbour --wide"))
        request = bot.engine.requests[-1]
        assert (request.chaos, request.negative_prompt) == (20, "people")
        assert request.width / request.height > 1.7  # --ar 2:1, snapped to multiples of 8

        _, refused = await reply_to(fake, "prefer option set", option="ar", value="--ar 1:1")
        assert "already a parameter" in refused.content
        _, refused = await reply_to(fake, "prefer suffix", value="--chaos 900")
        assert "out of range" in refused.content

        ac = await fake.autocomplete("prefer option delete", "option", option="w")
        assert [c["value"] for c in await ac.wait_for_choices()] == ["wide"]
        await reply_to(fake, "prefer option delete", option="wide")
        assert (await bot.store.profile(fake.alice.id)).options == {}


async def test_show_reposts_your_job_with_live_buttons_and_refuses_others(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path):
        await result_of(await fake.slash("imagine", prompt="a small boat --seed 4"))
        ix = await fake.slash("show", job_id=1)
        shown = await result_of(ix)
        assert shown.attachments[0].image().size == (128, 128)
        assert shown.labels[:4] == ["U1", "U2", "U3", "U4"]
        u1 = await fake.click(shown, label="U1")
        await u1.ack()
        assert (await u1.wait_for_followup(lambda m: m.attachments)).attachments[0].image().size == (64, 64)

        _, refused = await reply_to(fake, "show", job_id=1, user=fake.bob)
        assert refused.ephemeral and refused.content == "You have no job 1."


async def test_info_counts_jobs_and_gpu_time_and_help_explains(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path):
        await result_of(await fake.slash("imagine", prompt="a lamp"))
        await result_of(await fake.slash("imagine", prompt="a chair"))
        ix, info = await reply_to(fake, "info")
        assert ix.ephemeral
        fields = {f["name"]: f["value"] for f in info.embed["fields"]}
        assert fields["Jobs today"] == "2" and fields["Queued"] == "0"
        assert float(fields["GPU time"].split()[0]) > 0
        _, helped = await reply_to(fake, "help")
        assert "/imagine" in helped.embed["description"] and "--ar" in helped.embed["description"]


async def test_show_draws_a_job_again_when_its_images_are_gone(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await result_of(await fake.slash("imagine", prompt="a lighthouse --seed 6"))
        for image in await bot.store.get_images(1):
            (tmp_path / image.path).unlink()
        ix = await fake.slash("show", job_id=1)
        redrawn = await result_of(ix)  # the redraw's own message shows the grid again
        assert redrawn.attachments[0].image().size == (128, 128)
        told = await ix.wait_for_followup(lambda m: m.ephemeral)
        assert "drawn again with the same seeds" in told.content
        again = await bot.store.get_job(2)
        assert (again.kind, again.seeds, again.prompt) == ("imagine", list(tile_seeds(6)), "a lighthouse --seed 6")


async def test_relax_and_fast_modes_and_the_fast_time_left(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        _, said = await reply_to(fake, "relax")
        assert "Relax mode is **on**" in said.content
        await result_of(await fake.slash("imagine", prompt="a lamp"))
        await result_of(await fake.slash("imagine", prompt="a chair --fast"))
        assert [(await bot.store.get_job(n)).mode for n in (1, 2)] == ["relax", "fast"]
        _, info = await reply_to(fake, "info")
        fields = {f["name"]: f["value"] for f in info.embed["fields"]}
        assert fields["Mode"] == "Relax"
        assert fields["Fast time left"].endswith(" of 15 h")  # Midjourney Standard's 15 hours a month
        assert fields["Limits"] == "3 running, 10 waiting"

        _, said = await reply_to(fake, "fast")
        assert "Fast mode is **on**" in said.content
        # An admin gives one hour a month; an hour of fast jobs is used up, so the next one relaxes.
        await (await fake.slash("config set", key="fast_hours", value="1", user=fake.admin)).ack()
        await (await fake.slash("config set", key="max_queued_per_user", value="5", user=fake.admin)).ack()
        spent = await bot.store.enqueue(
            NewJob(kind="imagine", user_id=fake.alice.id, guild_id=fake.guild.id, channel_id=fake.channel.id,
                   prompt="an hour", spec=(await bot.store.get_job(2)).spec, seeds=[1, 2, 3, 4], model="fake"),
            QueueLimits(3, 10, 200),
        )  # fmt: skip
        await bot.store.cancel(spent.id)
        await bot.store.add_gpu_seconds(spent.id, 3600)
        ix = await fake.slash("imagine", prompt="a table")
        told = await ix.wait_for_followup(lambda m: m.ephemeral)
        assert "used this month's 1 hours of fast time" in told.content
        relaxed = await eventually(lambda: bot.store.get_job(4), lambda job: job is not None)
        assert relaxed.mode == "relax"
        _, info = await reply_to(fake, "info")
        fields = {f["name"]: f["value"] for f in info.embed["fields"]}
        assert (fields["Mode"], fields["Fast time left"], fields["Limits"]) == (
            "Fast",
            "0.0 s of 1 h",
            "3 running, 5 waiting",
        )


async def test_models_by_short_name_with_their_own_defaults(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    settings = {
        "models": ["turbo=/models/sdxl-turbo"],
        "model_defaults": {"turbo": {"steps": 2, "guidance_scale": 0}},
    }
    async with running_bot(fake, tmp_path, **settings) as bot:
        await result_of(await fake.slash("imagine", prompt="a fox --model turbo"))
        request = bot.engine.requests[-1]
        assert (request.model, request.steps, request.guidance_scale) == ("turbo", 2, 0)
        await result_of(await fake.slash("imagine", prompt="a fox"))
        assert (bot.engine.requests[-1].model, bot.engine.requests[-1].steps) == ("fake", 8)  # STEPS=8

        _, refused = await reply_to(fake, "imagine", prompt="a fox --model sdxl-turbo")
        assert refused.content == "Unknown model `sdxl-turbo`: use one of `fake`, `turbo`."

        ix, panel = await reply_to(fake, "settings")
        picked = await fake.select(panel, "dg:set:model", ["turbo"])
        assert (await picked.ack()).type == 7
        await result_of(await fake.slash("imagine", prompt="a hare"))
        assert bot.engine.requests[-1].model == "turbo"  # the member's /settings model
        _, helped = await reply_to(fake, "help")
        assert helped.embed["fields"][0]["value"].startswith("`fake`, `turbo`")


async def test_show_and_u_still_deliver_when_no_cog_builds_their_buttons(
    fake_discord: FakeDiscord, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    """A cog that failed to load leaves its button builder returning None. discord.py fails on
    view=None (send_message after sending, followup.send before), so those go out without a view."""
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="a small boat --seed 4"))
        # As when the cogs that build them failed to load:
        bot.views.picture_buttons.clear()
        bot.views.tile_action = None
        bot.views.picture_extras.clear()
        u1 = await fake.click(grid, label="U1")
        await u1.ack()
        tile = await u1.wait_for_followup(lambda m: m.attachments)
        assert tile.attachments[0].image().size == (64, 64) and not tile.labels
        bot.views.results.clear()
        shown = await result_of(await fake.slash("show", job_id=1))
        assert shown.attachments and not shown.labels
        await asyncio.sleep(0.5)  # send_message failed only after the message went out
        assert not [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
