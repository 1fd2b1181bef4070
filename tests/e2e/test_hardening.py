"""Attacks that once worked (issue #17), each replayed through the fake Discord.

A member, a clumsy admin or bad luck tried to freeze the bot, beat a limit or lose a result;
each test is one such attempt and what a member sees now.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import discord

from bot.cogs import edit as edit_cog
from bot.cogs.account import SettingsSelect
from bot.cogs.edit import RegionSelect, region_options
from bot.cogs.imagine import SendToDMButton, UpscaleButton, VariationButton
from bot.cogs.queue import CancelButton
from bot.errors import UserError
from engine.fake import FakeEngine
from engine.requests import RenderError
from tests.e2e.test_admin import configure, finished, refusal
from tests.fakediscord import FakeDiscord, P
from tests.harness import eventually, running_bot


async def test_a_catastrophic_banned_pattern_cannot_freeze_the_bot(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path):
        # Python's re needs ~2^n steps for this on n x's: 26 of them blocked the loop for ~7 s.
        assert " is now " in (await configure(fake, banned_words="/(x+x+)+y/"))[0]
        slow = await fake.slash("imagine", prompt="x" * 26, user=fake.alice)
        other = await fake.slash("imagine", prompt="a red fox", user=fake.bob)
        await slow.ack()
        await other.ack()  # within Discord's 3 s: nobody waits on someone else's prompt
        await finished(other)
        await finished(slow)


async def test_patterns_that_would_ban_everything_or_cant_run_in_linear_time_are_refused(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        replies = await configure(fake, banned_words="/./")
        assert replies == [
            "`banned_words`: `/./` can't be used: it would refuse almost every prompt (it matches a blank prompt)."
            " It takes `none`, or a comma list of words and `/regex/` patterns (each up to 100 characters)."
        ]
        replies = await configure(fake, banned_words=r"/(gore)\1/")
        assert "back-references and look-arounds can't be matched in linear time" in replies[0]
        assert (await bot.guild_configs.get(fake.guild.id))["banned_words"] == []


async def test_banned_words_are_not_evaded_by_invisible_or_look_alike_letters(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await configure(fake, banned_words="gore")
        for evasion in ("g\u200bore", "go\u00adre", "gоre", "ｇｏｒｅ"):
            assert "matches the word `gore`" in await refusal(fake, f"a {evasion} scene"), evasion
        assert await bot.store.get_job(1) is None
        assert len(await bot.store.moderation_log(fake.guild.id)) == 4


async def test_a_burst_of_commands_cannot_beat_the_daily_quota(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await configure(fake, daily_quota="5")
        burst = await asyncio.gather(*(fake.slash("imagine", prompt=f"fox {n}") for n in range(30)))
        await asyncio.gather(*(ix.ack() for ix in burst))
        replies = await asyncio.gather(*(ix.wait_for_reply() for ix in burst))
        refused = [reply for reply in replies if reply.ephemeral]
        assert len(burst) - len(refused) == 5
        assert all("You've used all 5 of today's jobs here" in reply.content for reply in refused)
        assert await bot.store.jobs_today(fake.alice.id, fake.guild.id) == 5


async def test_a_result_the_channel_wont_take_is_told_in_words_not_marked_delivered_unseen(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.2)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        ix = await fake.slash("imagine", prompt="a red fox")
        await ix.ack()
        await ix.wait_for_edit(lambda m: "%)" in m.content)
        fake.expire_tokens()  # the render outlived the interaction...
        fake.set_bot_permissions(P.EVERYONE & ~P.ATTACH_FILES)  # ...and an admin took away Attach Files
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at, timeout=10)
        post = fake.messages[job.result_message_id]
        assert post is not ix.original and post.content.endswith("(job 1)")
        assert "not allowed to attach images here" in post.content and "`/show 1`" in post.content
        assert fake.alice.mention in post.content
        assert ix.original.content.startswith("**a red fox**") and "Finished: " in ix.original.content  # not "(75%)"

        fake.set_bot_permissions(P.EVERYONE & ~P.SEND_MESSAGES)  # not even words: the old message says why
        ix = await fake.slash("imagine", prompt="a blue bird")
        await ix.ack()
        await ix.wait_for_edit(lambda m: "%)" in m.content)
        fake.expire_tokens()
        shown = await ix.wait_for_edit(lambda m: "not allowed to post in this channel" in m.content)
        assert shown.content.endswith("(job 2)")


async def test_a_long_prompt_and_a_long_engine_error_still_make_a_message_discord_takes(
    fake_discord: FakeDiscord, tmp_path: Path
):
    class Verbose(FakeEngine):
        async def render(self, request, *, progress=None):
            raise RenderError("the model said: " + "no " * 400)

    prompt = "*_~" * 500  # 1,500 characters that markdown escaping doubles
    async with running_bot(fake_discord, tmp_path, engine=Verbose(models=["fake"])):
        ix = await fake_discord.slash("imagine", prompt=prompt)
        await ix.ack()
        failed = await ix.wait_for_edit(lambda m: ":warning:" in m.content)
        assert len(failed.content) <= 2000
        assert failed.content.endswith("… (job 1)") and "the model said: no no" in failed.content
        assert "Waiting to start" not in failed.content


async def test_dms_are_off_by_default_and_bot_wide_rules_hold_everywhere(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    dm = fake.dm(fake.alice)
    async with running_bot(fake, tmp_path) as bot:
        assert await refusal(fake, "a red fox", channel=dm) == "I only draw in servers: use me in a server channel."
        assert await bot.store.get_job(1) is None

    rules = {"allow_dms": True, "banned_users": [fake.bob.id], "banned_words": ["gore"], "daily_quota": 1}
    async with running_bot(fake, tmp_path, **rules) as bot:
        # a server's ban stays in that server; the bot's ban, words and quota hold in DMs too
        await configure(fake, banned_members=fake.alice.mention)
        assert "matches the word `gore`" in await refusal(fake, "a gore scene", channel=dm)
        assert "You can't use dreamgrid." in await refusal(fake, "a red fox", user=fake.bob, channel=fake.dm(fake.bob))
        assert "You can't use dreamgrid." in await refusal(fake, "a red fox", user=fake.bob)
        ix = await fake.slash("imagine", prompt="a red fox", channel=dm)
        await ix.ack()
        await finished(ix)
        assert (await refusal(fake, "again", user=fake.alice, channel=dm)).startswith(
            "You've used all 1 of today's jobs across every server."
        )
        assert "can't use dreamgrid on this server" in await refusal(fake, "a red fox", user=fake.alice)


async def _post_buttons(bot, channel, *items) -> discord.Message:
    """A message of the bot's carrying the given buttons, as a stale or hand-made one would."""
    view = discord.ui.View(timeout=None)
    for item in items:
        view.add_item(item)
    return await bot.get_partial_messageable(channel.id).send("buttons", view=view)


async def test_buttons_and_ids_dont_act_across_servers_or_crash_on_odd_values(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    other = fake.add_guild("Other Guild", owner=fake.owner)
    elsewhere = fake.add_channel("elsewhere", guild=other)
    fake.add_member(fake.bob, guild=other)
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine, max_concurrent_jobs=1) as bot:
        await finished(await _imagine(fake, "alice's fox"))  # job 1, in the Dream Guild
        sent = await _post_buttons(bot, elsewhere, UpscaleButton(1, 1), VariationButton(1, 1), SendToDMButton(1))
        stale = fake.messages[sent.id]
        for custom_id in ("dg:u:1:1", "dg:v:1:1", "dg:dm:1"):
            click = await fake.click(stale, custom_id, user=fake.bob)
            assert (await click.wait_for_reply()).content == "Job 1 no longer exists.", custom_id
        assert len(engine.requests) == 1 and not fake.channel_messages(elsewhere)[1:]

        # /cancel names no owner of a job in another server
        await _imagine(fake, "__hang__ alice's long job")  # job 2
        cancel = await fake.slash("cancel", job_id=2, user=fake.bob, channel=elsewhere)
        await cancel.ack()
        assert (await cancel.wait_for_reply()).content == "There is no job 2."

        # U on someone else's job that is still waiting: not finished, and not drawn twice
        await _imagine(fake, "alice's third, queued")  # job 3 waits behind job 2
        sent = await _post_buttons(bot, fake.channel, UpscaleButton(3, 1), CancelButton(10**30))
        buttons = fake.messages[sent.id]
        click = await fake.click(buttons, "dg:u:3:1", user=fake.bob)
        assert (await click.wait_for_reply()).content == "Job 3 isn't finished yet (queued); its images aren't ready."
        assert await bot.store.get_job(4) is None

        # a Cancel whose id overflows SQLite's integers is a short error, not a crash
        click = await fake.click(buttons, f"dg:cancel:{10**30}", user=fake.bob)
        assert (await click.wait_for_reply()).content == f"There is no job {10**30}."

        # a /settings menu value the bot no longer offers
        menu = await _post_buttons(bot, fake.channel, SettingsSelect("aspect"))
        pick = await fake.select(fake.messages[menu.id], "dg:set:aspect", ["7:3"], user=fake.bob)
        assert (await pick.wait_for_reply()).content == "That choice isn't offered any more; open `/settings` again."


async def _imagine(fake: FakeDiscord, prompt: str, **where):
    ix = await fake.slash("imagine", prompt=prompt, **where)
    await ix.wait_for_answer()  # "Waiting to start" or a refusal
    return ix


async def test_smaller_traps_in_prompts_and_settings(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        # {choices} that repeat one prompt are --repeat by another name
        await configure(fake, repeat_allowed="off")
        assert await refusal(fake, "{cat, cat, cat}") == (
            "`--repeat` is turned off on this server, and so are {choices} that repeat a prompt."
        )
        # @everyone as the admin role, by id as by name
        everyone = f"<@&{fake.guild.id}>"
        assert (
            "@everyone can't be it: that would make every member an admin"
            in (await configure(fake, admin_role=everyone))[0]
        )
        assert (await bot.guild_configs.get(fake.guild.id))["admin_role"] is None
        # a broken character is a line to fix, not "Something went wrong"
        assert await refusal(fake, "a cat \ud83d in a hat") == (
            "Your prompt has a broken character in it (half of an emoji?): retype it."
        )
        # minus signs from a phone keyboard work like --
        grid = await finished(await _imagine(fake, "a wide fox −−ar 2:1"))
        assert grid.attachments[0].image().size == (2 * engine.requests[-1].width, 2 * engine.requests[-1].height)
        assert engine.requests[-1].width > engine.requests[-1].height  # 2:1 at the fake's 64² (multiples of 8)
        assert engine.requests[-1].prompt == "a wide fox"

        # a low max_steps still leaves Upscale (Subtle) steps to run
        await configure(fake, max_steps="4")
        tile = await (await fake.click(grid, "dg:u:*:1")).wait_for_followup(lambda m: m.attachments)
        upscale = await fake.click(tile, "dg:up:subtle:*")
        await upscale.ack()
        await fake.wait_for(lambda: len(engine.requests) == 2, what="the upscale to start")
        request = engine.requests[-1]
        assert int(request.steps * request.strength) >= 2, (request.steps, request.strength)


CALLBACK = "/interactions/{interaction_id}/{interaction_token}/callback"


async def test_an_interaction_discord_wont_take_an_answer_for_queues_nothing(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        # Discord's answer to an acknowledgement that came too late: the member saw "did not respond".
        outage = fake.fail_requests(404, route=CALLBACK, count=1, code=10062)
        late = await fake.slash("imagine", prompt="a red fox")
        await fake.wait_for(lambda: outage.hits, what="the acknowledgement")
        late.expire()  # as far as Discord is concerned this interaction is over
        ok = await _imagine(fake, "a blue bird")
        await finished(ok)
        assert [r.prompt for r in engine.requests] == ["a blue bird"]  # the unacknowledged one never ran
        assert (await bot.store.get_job(1)).prompt == "a blue bird" and await bot.store.get_job(2) is None
        assert len(fake.channel_messages()) == 1


async def test_a_reply_discord_applied_but_answered_502_leaves_no_stale_message(
    fake_discord: FakeDiscord, tmp_path: Path
):
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        fake.fail_requests(502, route=CALLBACK, count=1, after_applying=True)
        with fake.expect_violations("responded to twice"):  # discord.py retried a reply Discord had taken
            ix = await fake.slash("imagine", prompt="a red fox")
            grid = await finished(ix)
        assert grid.embeds and "Waiting to start" not in grid.content
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at)
        assert job.message_id == grid.id and job.result_message_id == grid.id
        assert len(fake.channel_messages()) == 1  # the job's own message, not a second post


async def test_forged_vary_region_values_get_a_short_answer(fake_discord: FakeDiscord, tmp_path: Path):
    """Issue #29: "²" passes str.isdigit but not int(), 5,000 digits pass Python's digit limit, and a
    4,000-digit cell was quoted back in a refusal longer than Discord's 2,000 characters."""
    fake = fake_discord
    async with running_bot(fake, tmp_path) as bot:
        await finished(await _imagine(fake, "a lighthouse"))  # job 1
        menu = await _post_buttons(bot, fake.channel, RegionSelect(1, 1, options=region_options(64, 64)))
        for forged in ("²", "9" * 5000, "9" * 4000, "٣", "1" * 3, "-1", " 1"):
            pick = await fake.select(fake.messages[menu.id], "dg:cells:1:1", [forged], user=fake.alice)
            reply = (await pick.wait_for_reply()).content
            assert reply == "That menu is out of date: press Vary (Region) again.", forged[:10]
        assert await bot.store.get_job(2) is None
        # Cells that don't exist on the picture are told as such.
        pick = await fake.select(fake.messages[menu.id], "dg:cells:1:1", ["99"], user=fake.alice)
        reply = (await pick.wait_for_reply()).content
        assert "99" in reply and len(reply) <= 2000 and "Something went wrong" not in reply


async def test_every_refusal_fits_discords_message_limit(fake_discord: FakeDiscord, tmp_path: Path, monkeypatch):
    """A refusal that quotes what the member sent is cut to fit, wherever it is raised."""
    fake = fake_discord

    def quoting(values: list[str], width: int, height: int) -> set[int]:
        raise UserError(f"Cell {'9' * 4000} is not on the picture.")

    monkeypatch.setattr(edit_cog, "chosen_cells", quoting)
    async with running_bot(fake, tmp_path) as bot:
        await finished(await _imagine(fake, "a lighthouse"))
        menu = await _post_buttons(bot, fake.channel, RegionSelect(1, 1, options=region_options(64, 64)))
        pick = await fake.select(fake.messages[menu.id], "dg:cells:1:1", ["1"], user=fake.alice)
        reply = (await pick.wait_for_reply()).content
        assert reply.startswith("Cell 999") and reply.endswith("…") and len(reply) == 2000
