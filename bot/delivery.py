"""Showing a job's state to its member, whatever happened to the interaction in between.

The job's interaction webhook edits its message while the token lives (15 minutes). After
that, edits go through the bot's own token, and a finished result is posted to the channel
with a mention, so the member is told even when the render outlived the interaction.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import discord

from bot.store import Job

log = logging.getLogger(__name__)

INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015
UNKNOWN_MESSAGE = 10008


@dataclass(frozen=True, slots=True)
class Shown:
    channel_id: int
    message_id: int


class Delivery:
    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def _webhook(self, job: Job) -> discord.Webhook | None:
        if not job.token_usable or job.application_id is None:
            return None
        return discord.Webhook.partial(job.application_id, job.interaction_token, client=self.client)

    async def update(
        self,
        job: Job,
        *,
        content: str,
        embed: discord.Embed | None = None,
        file: discord.File | None = None,
        view: discord.ui.View | None = None,
        announce: bool = False,
    ) -> Shown | None:
        """Edit the job's message; with `announce`, a new channel post replaces a failed edit.

        Progress uses announce=False (a lost progress edit is harmless); final states use
        announce=True (the member must hear about them).
        """
        kwargs = {
            "content": content,
            "embed": embed,
            "attachments": [file] if file else [],
            "view": view,
            "allowed_mentions": discord.AllowedMentions.none(),
        }
        if job.message_id is not None:
            webhook = self._webhook(job)
            if webhook is not None:
                try:
                    message = await webhook.edit_message(job.message_id, **kwargs)
                    return Shown(message.channel.id if message.channel else job.channel_id, message.id)
                except discord.HTTPException as exc:
                    if exc.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK) and exc.status not in (401, 404):
                        raise
                    log.info("job %s: interaction token no longer works (%s)", job.id, exc.code)
            if not announce:
                # The response message is authored by the bot, so its own token can still edit it.
                channel = self.client.get_partial_messageable(job.channel_id)
                try:
                    message = await channel.get_partial_message(job.message_id).edit(**kwargs)
                    return Shown(job.channel_id, message.id)
                except discord.HTTPException as exc:
                    log.info("job %s: progress edit failed: %s", job.id, exc)
                    return None
        if not announce:
            return None
        return await self._post(job, content=content, embed=embed, file=file, view=view)

    async def _post(
        self, job: Job, *, content: str, embed: discord.Embed | None, file: discord.File | None, view: discord.ui.View | None
    ) -> Shown:
        channel = self.client.get_partial_messageable(job.channel_id)
        if file is not None:
            file.reset()
        message = await channel.send(
            content=content,
            embed=embed,
            file=file,
            view=view,
            allowed_mentions=discord.AllowedMentions(users=[discord.Object(job.user_id)]),
            # Discord drops a second message with the same nonce: a retry after a crash can't double-post.
            nonce=f"dg-{job.id}",
        )
        if job.message_id is not None:
            # Point the old progress message at the result instead of leaving it at "57%".
            stale = channel.get_partial_message(job.message_id)
            try:
                await stale.edit(content=f"{content.splitlines()[0]}\nFinished: {message.jump_url}", embed=None, attachments=[], view=None)
            except discord.HTTPException:
                pass
        return Shown(job.channel_id, message.id)
