"""/tune: a style of the member's own, trained from 5–30 pictures; /styles: their codes, and room to free.

A /tune is an ordinary job of kind `tune`: queued fairly with every other job, Fast or Relax, charged
its device time, cancellable, its progress edited into its message, and run again from its last
checkpoint after a restart. It ends with a style code: `--lora CODE` in any prompt draws with it.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, policy, tunes
from bot.client import DreamGrid
from bot.cogs.moodboard import board_name
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.member_pictures import read_attachments
from bot.rows import NewJob
from bot.spec import InputImage, JobSpec, RenderSpec

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]
MB = 1_000_000


async def gather_pictures(
    bot: DreamGrid,
    interaction: Interaction,
    attachments: list[discord.Attachment],
    images: str | None,
    native: int,
    moodboard: str | None = None,
) -> list[InputImage]:
    """Every picture a /tune learns from: the attached ones, then the named job images, then the
    member's moodboard's (already our own copies)."""
    collected: list[InputImage] = []
    if moodboard is not None:
        name = board_name(moodboard)
        found = await bot.store.moodboard_pictures(interaction.user.id, name)
        if found is None:
            raise UserError(f"You have no moodboard called `{name}`: `/moodboard list` shows yours.")
        collected = list(found)
    pictures = [*(await tunes.job_pictures(bot, interaction, images) if images else []), *collected]
    if attachments:
        pictures = [
            *await read_attachments(
                attachments,
                member_id=interaction.user.id,
                reader=bot.pictures,
                upload_limit=interaction.filesize_limit,
                pixel_budget=native * native,
                data_dir=bot.settings.data_dir,
            ),
            *pictures,
        ]
    tunes.check_count(pictures)
    return pictures


class Tune(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Train a style of your own from 5–30 pictures; you get a code for --lora")
    @app_commands.describe(
        moodboard="One of your moodboards (/moodboard): its pictures are learnt from",
        images="Job images to learn from: job numbers (all four) or job:image, e.g. `12, 15:2`",
        **{f"image{n}": "A picture to learn from" for n in range(1, 11)},
    )
    async def tune(
        self,
        interaction: Interaction,
        moodboard: app_commands.Range[str, 1, 32] | None = None,
        images: app_commands.Range[str, 1, 500] | None = None,
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        image8: discord.Attachment | None = None,
        image9: discord.Attachment | None = None,
        image10: discord.Attachment | None = None,
    ) -> None:
        bot = self.bot
        attached = [image1, image2, image3, image4, image5, image6, image7, image8, image9, image10]
        attachments = [a for a in attached if a is not None]

        async def build(config: GuildConfig) -> list[NewJob]:
            if not bot.settings.lora_storage_mb:
                raise UserError("/tune is turned off on this bot.")
            if config.loras_off:
                raise UserError("LoRAs are turned off on this server, so a style from /tune could not be used here.")
            limit = bot.settings.lora_storage_mb * MB
            used = await tunes.storage_used(bot, interaction.user.id)
            if used >= limit:
                raise UserError(
                    f"Your styles take {used / MB:.1f} MB, and this bot allows {limit / MB:g} MB each:"
                    " free some with `/styles delete`."
                )
            model = config.default_model
            reason = bot.engine.supports(model, kinds.TUNE.action)
            if reason is not None:  # before downloading anything
                raise UserError(f"{reason}.")
            native = bot.engine.native_size(model)
            if not interaction.response.is_done():  # reading pictures may outlast Discord's 3 s
                await interaction.response.defer(thinking=True)
            pictures = await gather_pictures(bot, interaction, attachments, images, native, moodboard)
            spec = JobSpec(render=RenderSpec(prompt="", width=native, height=native), inputs=tuple(pictures))
            return [
                jobs.new_job(
                    interaction,
                    kind=kinds.TUNE,
                    prompt=f"a style from {len(pictures)} pictures",
                    spec=spec,
                    seeds=kinds.TUNE.seeds(),
                    model=model,
                    mode=await jobs.mode_of(bot, interaction.user.id),
                )
            ]

        await jobs.submit(bot, interaction, build)

    @app_commands.command(description="Your style codes from /tune, and the room they take; delete one to free it")
    @app_commands.describe(delete="A style code of yours to delete (its LoRA file goes too)")
    async def styles(self, interaction: Interaction, delete: app_commands.Range[str, 1, 40] | None = None) -> None:
        bot = self.bot
        await policy.gate(bot, interaction)
        member = interaction.user.id
        if delete is not None:
            style = await bot.store.style_code(delete.strip().strip("`"))
            if style is None or style.user_id != member:
                raise UserError(f"You have no style `{delete[:40]}`: `/styles` lists yours.")
            await bot.store.delete_style_code(style.code)
            await asyncio.to_thread(Path(style.path).unlink, missing_ok=True)
            log.info("member %s deleted style %s", member, style.code)
        owned = await bot.store.style_codes(member)
        used = sum(style.bytes for style in owned)
        lines = [f"`{style.code}` — job {style.job_id}, {style.bytes / MB:.1f} MB" for style in owned[-20:]]
        head = f"Deleted `{delete.strip()}`. " if delete is not None else ""
        listing = "\n".join(lines) if lines else "None yet: `/tune` makes one from 5–30 pictures."
        room = f"{used / MB:.1f} of {bot.settings.lora_storage_mb:g} MB used"
        await interaction.response.send_message(
            f"{head}Your styles ({room}); use one with `--lora CODE`:\n{listing}", ephemeral=True
        )


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Tune(bot))
