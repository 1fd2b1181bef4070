"""Errors a member is told about. Everything else is logged and answered with an apology."""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands

log = logging.getLogger(__name__)


MESSAGE_CHARS = 2000  # Discord refuses longer content with a 400, leaving the member with no answer


class UserError(app_commands.AppCommandError):
    """An expected refusal (bad prompt, over a limit, not allowed); `str()` is shown to the member."""


def clip(text: str, limit: int = MESSAGE_CHARS) -> str:
    """`text`, cut to `limit` characters with an ellipsis when longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


DEFERRED = "dreamgrid.deferred"  # interaction.extras key (bot.jobs sets it): answered with a public "thinking…"


async def reply_ephemeral(interaction: discord.Interaction, content: str, **kwargs: Any) -> None:
    """Tell only the member (with an embed or a view in `kwargs`); a public "thinking…" before it is removed.

    Refusals may quote what the member sent (a value, a name); cut here, every one fits Discord's limit.
    """
    content = clip(content)
    if not interaction.response.is_done():
        await interaction.response.send_message(content, ephemeral=True, **kwargs)
        return
    if interaction.extras.pop(DEFERRED, False):
        # The first follow-up would fill in the public "thinking…" message, for everyone to see.
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.info("could not remove the 'thinking' message of interaction %s", interaction.id)
    await interaction.followup.send(content, ephemeral=True, **kwargs)


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
