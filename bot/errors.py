"""Errors a member is told about. Everything else is logged and answered with an apology."""

from __future__ import annotations

import logging

import discord
from discord import app_commands

log = logging.getLogger(__name__)


class UserError(app_commands.AppCommandError):
    """An expected refusal (bad prompt, over a limit, not allowed); `str()` is shown to the member."""


DEFERRED = "dreamgrid.deferred"  # interaction.extras key (bot.jobs sets it): answered with a public "thinking…"


async def reply_ephemeral(interaction: discord.Interaction, content: str) -> None:
    """Tell only the member; a public "thinking…" that preceded it is removed first."""
    if not interaction.response.is_done():
        await interaction.response.send_message(content, ephemeral=True)
        return
    if interaction.extras.pop(DEFERRED, False):
        # The first follow-up would fill in the public "thinking…" message, for everyone to see.
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.info("could not remove the 'thinking' message of interaction %s", interaction.id)
    await interaction.followup.send(content, ephemeral=True)


async def on_app_command_error(interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
    """The one home for command errors (`CommandTree.on_error`)."""
    original = error.original if isinstance(error, app_commands.CommandInvokeError) else error
    if isinstance(original, UserError):
        message = str(original)
    elif isinstance(original, app_commands.CheckFailure | app_commands.TransformerError):
        message = str(original) or "You can't use this command here."
    else:
        command = interaction.command.qualified_name if interaction.command else "?"
        log.exception("command /%s failed", command, exc_info=original)
        message = "Something went wrong on our side. It has been logged; please try again."
    try:
        await reply_ephemeral(interaction, message)
    except discord.HTTPException:
        log.warning("could not tell %s about an error: %s", interaction.user, message)
