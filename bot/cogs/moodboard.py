"""/moodboard create|add|list|delete: pictures a member collects, used together as one style (`--sref mb:NAME`).

A moodboard is the member's own (any server): its pictures are our stored copies (`bot.member_pictures`
for uploads, a job's tile copied like `--sref 12:3`), never pruned, so a moodboard works at any age.
The server's `/config max_moodboards` and `moodboard_pictures` limit them.
"""

from __future__ import annotations

import re

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy, styles
from bot.client import DreamGrid
from bot.errors import UserError
from bot.member_pictures import read_for_interaction
from bot.store import MoodboardRefused

Interaction = discord.Interaction[DreamGrid]
_NAME = re.compile(r"[a-z0-9_-]{1,32}")
_TILE = re.compile(r"([0-9]{1,12}):([1-4])")


def board_name(text: str) -> str:
    """A moodboard's name as stored (lower case), or a UserError saying what a name may be."""
    name = text.strip().lower()
    if not _NAME.fullmatch(name):
        raise UserError("A moodboard's name is 1–32 letters, digits, `-` or `_`, e.g. `autumn`.")
    return name


class Moodboard(commands.GroupCog, group_name="moodboard", group_description="Pictures you collect as one style"):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="create", description="A new, empty moodboard")
    @app_commands.describe(moodboard="Its name, used as --sref mb:NAME")
    async def create(self, interaction: Interaction, moodboard: str) -> None:
        config = await policy.gate(self.bot, interaction)
        name = board_name(moodboard)
        try:
            await self.bot.store.create_moodboard(interaction.user.id, name, config["max_moodboards"])
        except MoodboardRefused as exc:
            raise UserError(str(exc)) from None
        await interaction.response.send_message(
            f"Moodboard `{name}` made: add pictures with `/moodboard add`, use it with `--sref mb:{name}`.",
            ephemeral=True,
        )

    @app_commands.command(name="add", description="Add a picture: an upload or a job's image")
    @app_commands.describe(moodboard="The moodboard", image="A picture to add", job_image="A job's image, like 12:3")
    async def add(
        self,
        interaction: Interaction,
        moodboard: str,
        image: discord.Attachment | None = None,
        job_image: str | None = None,
    ) -> None:
        config = await policy.gate(self.bot, interaction)
        name = board_name(moodboard)
        if (image is None) == (job_image is None):
            raise UserError("Add one picture: an `image` upload or a `job_image` like `12:3`.")
        if job_image is not None:
            tile = _TILE.fullmatch(job_image.strip())
            if tile is None:
                raise UserError(f"`{job_image[:40]}` is not a job's image: write the job and image, like `12:3`.")
            await interaction.response.defer(ephemeral=True, thinking=True)
            picture = await styles.tile_picture(self.bot, interaction, int(tile[1]), int(tile[2]))
        else:
            assert image is not None
            native = self.bot.engine.native_size()
            picture = await read_for_interaction(
                interaction,
                image,
                reader=self.bot.pictures,
                pixel_budget=native * native,
                data_dir=self.bot.settings.data_dir,
            )
        try:
            count = await self.bot.store.add_to_moodboard(
                interaction.user.id, name, picture, config["moodboard_pictures"]
            )
        except MoodboardRefused as exc:
            raise UserError(str(exc)) from None
        await interaction.edit_original_response(content=f"Added {picture.name} to `{name}`: it holds {count} now.")

    @app_commands.command(name="list", description="Your moodboards")
    async def list_boards(self, interaction: Interaction) -> None:
        boards = await self.bot.store.moodboards(interaction.user.id)
        if not boards:
            text = "You have no moodboards yet: make one with `/moodboard create`."
        else:
            text = "\n".join(f"`mb:{name}`: {count} picture{'s' if count != 1 else ''}" for name, count in boards)
        await interaction.response.send_message(text, ephemeral=True)

    @app_commands.command(name="delete", description="Delete one of your moodboards")
    @app_commands.describe(moodboard="The moodboard")
    async def delete(self, interaction: Interaction, moodboard: str) -> None:
        name = board_name(moodboard)
        if not await self.bot.store.delete_moodboard(interaction.user.id, name):
            raise UserError(f"You have no moodboard called `{name}`.")
        await interaction.response.send_message(
            f"Moodboard `{name}` deleted; jobs drawn with it keep their pictures.", ephemeral=True
        )


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Moodboard(bot))
