"""/blend: two to five of a member's pictures mixed into one 2x2 grid, as on Midjourney.

The pictures go through `bot.member_pictures` (the same checks and our own stored copies as every
member's picture) and the result is an ordinary job of kind `blend`: queued fairly, cancellable,
found again with /show, recovered after a crash, with the usual U/V/🔄 buttons. The embed says
whether the operator's IP-Adapter mixed them or the model's latents did.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, policy, spec_builders
from bot.client import DreamGrid
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.member_pictures import read_attachments, shown_name
from bot.rows import NewJob

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]

DIMENSIONS = {"portrait": (2, 3), "square": (1, 1), "landscape": (3, 2)}


class Blend(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Mix 2–5 of your pictures into four new images")
    @app_commands.describe(
        image1="A picture to blend (PNG, JPEG, WebP or GIF)",
        image2="Another picture to blend",
        image3="Optional: a third picture",
        image4="Optional: a fourth picture",
        image5="Optional: a fifth picture",
        dimensions="The shape of the images (default Square)",
        prompt="Optional words to steer the mix; your /prefer suffix is added",
    )
    @app_commands.choices(
        dimensions=[
            app_commands.Choice(name="Portrait (2:3)", value="portrait"),
            app_commands.Choice(name="Square (1:1)", value="square"),
            app_commands.Choice(name="Landscape (3:2)", value="landscape"),
        ]
    )
    async def blend(
        self,
        interaction: Interaction,
        image1: discord.Attachment,
        image2: discord.Attachment,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        dimensions: str = "square",
        prompt: app_commands.Range[str, 1, 1500] | None = None,
    ) -> None:
        bot = self.bot
        attachments = [a for a in (image1, image2, image3, image4, image5) if a is not None]
        if dimensions not in DIMENSIONS:
            raise UserError("`dimensions` is Portrait, Square or Landscape.")

        async def build(config: GuildConfig) -> list[NewJob]:
            profile = await bot.store.profile(interaction.user.id)
            parsed = jobs.parse_members_prompt(bot, config, profile, prompt or "", allow_empty=True)[0]
            if parsed.image_weight is not None:
                raise UserError("`--iw` is for an image prompt; a blend mixes its pictures evenly.")
            model = parsed.model or config.default_model
            policy.check_model(config, model)  # before downloading anything
            native = bot.engine.native_size(model)
            # Reading several pictures may outlast Discord's 3 s: defer, and refuse in that placeholder.
            if not interaction.response.is_done():
                await interaction.response.defer(ephemeral=True, thinking=True)
            # Downloaded and decoded side by side; the first refusal is the one the member sees.
            pictures = await read_attachments(
                attachments,
                member_id=interaction.user.id,
                reader=bot.pictures,
                upload_limit=interaction.filesize_limit,
                pixel_budget=native * native,
                data_dir=bot.settings.data_dir,
            )
            names = ", ".join(shown_name(p.name) for p in pictures)
            await interaction.edit_original_response(content=f"Blending {names}.")
            defaults = jobs.prompt_defaults(config, profile)
            spec = spec_builders.blend_spec(
                parsed,
                pictures,
                aspect=DIMENSIONS[dimensions],
                settings=bot.settings,
                engine=bot.engine,
                model=model,
                defaults=defaults,
            )
            # The profile read above also gives the member's /fast or /relax: no second read.
            return [jobs.prompt_job(interaction, kinds.BLEND, parsed, spec, model=model, profile=profile)]

        await jobs.submit(bot, interaction, build)


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Blend(bot))
