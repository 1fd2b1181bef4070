"""Who may see a picture (issue #29): a job drawn in a channel a member cannot read never reaches them.

Every way of naming a job goes through one rule (`bot.policy.can_see`): the member's own job, or
one posted in a channel they can read. Buttons, selects and Apps-menu targets can be forged (a
custom_id is only text), so each is tried here from a channel the attacker can read, naming a job
from one they cannot.
"""

from __future__ import annotations

from pathlib import Path

import discord

from bot import kinds
from bot.cogs.describe import ImagineAllButton, PromptButton
from bot.cogs.edit import (
    MakeSquareButton,
    PanButton,
    RegionSelect,
    VaryRegionButton,
    ZoomButton,
    region_options,
)
from bot.cogs.imagine import RerollButton, SendToDMButton, TileActionButton, UpscaleButton, VariationButton
from bot.edits import Direction
from engine.fake import FakeEngine
from tests.fakediscord import FakeDiscord, Message
from tests.harness import result_of, running_bot

HIDDEN = "Job 1 no longer exists."


def forged_items(job_id: int) -> list[discord.ui.DynamicItem]:
    """Every button and select that names a job, pointed at `job_id`."""
    return [
        UpscaleButton(job_id, 1),
        VariationButton(job_id, 1),
        RerollButton(job_id),
        SendToDMButton(job_id),
        SendToDMButton(job_id, 1),
        *(TileActionButton(kinds.VARIATION, preset, job_id, 1) for preset in kinds.VARIATION.strengths),
        *(TileActionButton(kinds.UPSCALE, preset, job_id, 1) for preset in kinds.UPSCALE.strengths),
        ZoomButton("2", job_id, 1),
        ZoomButton("custom", job_id, 1),
        MakeSquareButton(job_id, 1),
        PanButton(Direction.RIGHT, job_id, 1),
        VaryRegionButton(job_id, 1),
        RegionSelect(job_id, 1, options=region_options(64, 64)),
        PromptButton(job_id, 1),
        ImagineAllButton(job_id),
    ]


async def _post(fake: FakeDiscord, bot, channel, item: discord.ui.Item | None = None, **fields) -> Message:
    """A message of the bot's in `channel`, as a forged or stale one would look to the bot."""
    view = discord.ui.View(timeout=None)
    if item is not None:
        view.add_item(item)
    embed = None
    if fields:
        embed = discord.Embed(title="forged")
        for name, value in fields.items():
            embed.add_field(name=name, value=value)
    sent = await bot.get_partial_messageable(channel.id).send("forged", view=view, embed=embed)
    return fake.messages[sent.id]


async def _use(fake: FakeDiscord, message: Message, item: discord.ui.DynamicItem, user) -> str:
    custom_id = item.custom_id
    if isinstance(item.item, discord.ui.Select):
        ix = await fake.select(message, custom_id, ["1"], user=user)
    else:
        ix = await fake.click(message, custom_id, user=user)
    await ix.ack()
    assert ix.modal is None, f"{custom_id} opened a modal for a job its member cannot see"
    return (await ix.wait_for_reply()).content


async def test_a_picture_drawn_in_a_private_channel_never_leaves_it(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    staff = fake.make_private(fake.add_channel("staff"), fake.alice, fake.admin)
    engine = FakeEngine(models=["fake"], step_delay_s=0.01)
    async with running_bot(fake, tmp_path, engine=engine) as bot:
        grid = await result_of(await fake.slash("imagine", prompt="the staff's secret fox", channel=staff))  # job 1
        renders = len(engine.requests)
        posted = {m.id for m in fake.channel_messages(fake.channel)}

        # Every button and select, forged in #general where bob can read, naming the private job.
        for item in forged_items(1):
            message = await _post(fake, bot, fake.channel, item)
            assert await _use(fake, message, item, fake.bob) == HIDDEN, item.custom_id

        # Commands that take a job id.
        for command, options, expected in (
            ("upscale", {"job_id": 1, "number": 1}, "You have no job 1, and none was posted where you can see it."),
            ("variation", {"job_id": 1, "number": 1}, "You have no job 1, and none was posted where you can see it."),
            ("show", {"job_id": 1}, "You have no job 1."),
            ("cancel", {"job_id": 1}, "There is no job 1."),
        ):
            ix = await fake.slash(command, user=fake.bob, **options)
            await ix.ack()
            assert (await ix.wait_for_reply()).content == expected, command

        # The Apps menu on a message of ours that names the job (as a tile's embed does).
        target = await _post(fake, bot, fake.channel, Job="1, image 1")
        for action in ("Upscale 2x", "Vary"):
            ix = await fake.context_menu(action, target, user=fake.bob)
            await ix.ack()
            assert (await ix.wait_for_reply()).content == (
                "You have no job 1, and none was posted where you can see it."
            ), action

        # Nothing was drawn, posted or sent for bob: no picture, no prompt.
        assert len(engine.requests) == renders
        leaked = [
            m
            for m in fake.channel_messages(fake.channel, include_ephemeral=True)
            if m.id not in posted and (m.attachments or "secret fox" in m.content or m.embeds and m.content != "forged")
        ]
        assert not leaked, leaked
        assert not fake.channel_messages(fake.dm(fake.bob))
        assert await bot.store.get_job(2) is None

        # Someone who can read the channel may work from it from anywhere, and its member always may.
        for user in (fake.admin, fake.alice):
            message = await _post(fake, bot, fake.channel, UpscaleButton(1, 2))
            ix = await fake.click(message, "dg:u:1:2", user=user)
            await ix.ack()
            tile = await ix.wait_for_followup(lambda m: m.attachments)
            assert tile.attachments and "secret fox" in tile.content
        assert grid.attachments
