"""Showing a job's state to its member, whatever happened to the interaction in between, and
what its final message shows (`final_message`: the scheduler's delivery and /show use the same).

The job's interaction webhook edits its message while the token lives (15 minutes). After
that, edits go through the bot's own token, and a finished result is posted to the channel
with a mention, so the member is told even when the render outlived the interaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import kinds, messages
from bot.clip_files import encode_clip_for_upload, load_clip
from bot.image_files import DEFAULT_UPLOAD_LIMIT, encode_grid
from bot.kinds import Output
from bot.rows import ImageRow, Job, parse_time

if TYPE_CHECKING:
    from bot.ui import JobViews

log = logging.getLogger(__name__)

INVALID_WEBHOOK_TOKEN = 50027
UNKNOWN_WEBHOOK = 10015
UNKNOWN_MESSAGE = 10008
NO_IMAGE_NOTE = (
    ":warning: I'm not allowed to attach images here (Attach Files, Embed Links): `/show {job_id}` shows it."
)
CANNOT_POST_NOTE = ":warning: I'm not allowed to post in this channel any more: `/show {job_id}` shows the result."


@dataclass(frozen=True, slots=True)
class Shown:
    channel_id: int
    message_id: int


@dataclass(frozen=True, slots=True)
class FinalMessage:
    """What a finished job's message says, and the file, embed and buttons it carries."""

    content: str
    embed: discord.Embed | None = None
    file: discord.File | None = None
    view: discord.ui.View | None = None


async def final_message(
    job: Job,
    rows: Sequence[ImageRow],
    *,
    data_dir: Path,
    views: JobViews,
    upload_limit: int | None = None,
) -> FinalMessage:
    """The message a job ends with: its result (the pictures, or the words beside the picture they
    are about, as its kind's `output` says), or why it ended. `rows`: its stored images.

    The images are encoded in a worker thread to fit `upload_limit` (default: the job's channel's).
    """
    if job.status == "cancelled":
        return FinalMessage(messages.cancelled(job))
    if job.status != "done":
        return FinalMessage(messages.failed(job))
    limit = upload_limit or job.spec.delivery.upload_limit or DEFAULT_UPLOAD_LIMIT
    output = kinds.get(job.kind).output
    if output is Output.STYLE:  # a style code, shown with the first picture it learnt from
        paths = [data_dir / job.spec.inputs[0].path]
        data, filename = await asyncio.to_thread(encode_grid, paths, f"dreamgrid-{job.id}-moodboard", limit)
        embed = messages.style_embed(job, filename)
    elif output is Output.CLIP:  # a clip Discord plays, made to fit the upload limit
        clip = await asyncio.to_thread(load_clip, data_dir / rows[0].path)
        data, filename = await asyncio.to_thread(encode_clip_for_upload, clip, f"dreamgrid-{job.id}", limit)
        embed = messages.clip_embed(job, list(rows), filename, clip)
    elif output is Output.TEXT:  # words, shown beside our copy of the picture
        paths = [data_dir / job.spec.inputs[0].path]
        data, filename = await asyncio.to_thread(encode_grid, paths, f"dreamgrid-{job.id}-described", limit)
        embed = messages.described_embed(job, filename)
    else:
        paths = [data_dir / row.path for row in rows]
        data, filename = await asyncio.to_thread(encode_grid, paths, f"dreamgrid-{job.id}", limit)
        filename = messages.spoiler_name(job, list(rows), filename)
        embed = messages.result_embed(job, list(rows), filename)
    return FinalMessage(
        content=messages.done(job),
        embed=embed,
        file=discord.File(io.BytesIO(data), filename=filename),
        view=views.result(job),
    )


class Delivery:
    def __init__(self, client: discord.Client) -> None:
        self.client = client

    def _webhook(self, job: Job) -> discord.Webhook | None:
        if not job.token_usable or job.application_id is None or job.interaction_token is None:
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
        notify: bool = True,
    ) -> Shown | None:
        """Edit the job's message; with `announce`, a new channel post replaces a failed edit.

        Progress uses announce=False (a lost progress edit is harmless); final states use
        announce=True (the member must hear about them). With `notify=False` (a cancellation
        the member asked for) an expired token means an edit with the bot's token, not a ping.
        """
        kwargs: dict[str, Any] = {  # Any: the same edit goes to two discord.py methods with different overloads
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
                    message: discord.Message = await webhook.edit_message(job.message_id, **kwargs)
                    return Shown(message.channel.id if message.channel else job.channel_id, message.id)
                except discord.HTTPException as exc:
                    if exc.code not in (INVALID_WEBHOOK_TOKEN, UNKNOWN_WEBHOOK) and exc.status not in (401, 404):
                        raise
                    log.info("job %s: interaction token no longer works (%s)", job.id, exc.code)
            if not announce or not notify:
                # The response message is authored by the bot, so its own token can still edit it.
                channel = self.client.get_partial_messageable(job.channel_id)
                try:
                    message = await channel.get_partial_message(job.message_id).edit(**kwargs)
                    return Shown(job.channel_id, message.id)
                except discord.HTTPException as exc:
                    log.info("job %s: edit with the bot's token failed: %s", job.id, exc)
                    if not announce:
                        return None
        if not announce:
            return None
        return await self._post(job, content=content, embed=embed, file=file, view=view)

    async def _post(
        self,
        job: Job,
        *,
        content: str,
        embed: discord.Embed | None,
        file: discord.File | None,
        view: discord.ui.View | None,
    ) -> Shown:
        channel = self.client.get_partial_messageable(job.channel_id)
        if file is not None:
            file.reset()
        mention = discord.AllowedMentions(users=[discord.Object(job.user_id)])
        try:
            message = await channel.send(
                content=content,
                embed=embed,  # type: ignore[arg-type]  # send() takes None; its overloads omit it
                file=file,  # type: ignore[arg-type]  # send() takes None; its overloads omit it
                view=view,  # type: ignore[arg-type]  # send() takes None; its overloads omit it
                allowed_mentions=mention,
                # Discord drops a second message with the same nonce: a retry after a crash can't double-post.
                nonce=f"dg-{job.id}",
            )
        except discord.Forbidden as exc:
            if file is None and embed is None:
                await self._explain_on_old_message(channel, job)
                raise
            # No Attach Files or Embed Links here: the result in words, and where to see it.
            log.warning(
                "job %s: cannot post the image in channel %s (%s); posting text only", job.id, job.channel_id, exc
            )
            note = NO_IMAGE_NOTE.format(job_id=job.id)
            try:
                message = await channel.send(
                    content=messages.noted(job, note), allowed_mentions=mention, nonce=f"dg-{job.id}-text"
                )
            except discord.Forbidden:
                await self._explain_on_old_message(channel, job)
                raise
        if job.message_id is not None:
            await self._point_at(channel, job, message)
        return Shown(job.channel_id, message.id)

    async def _explain_on_old_message(self, channel: discord.PartialMessageable, job: Job) -> None:
        """The bot may not post here at all: say so on the job's own message, if it has one."""
        if job.message_id is None:
            return
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(job.message_id).edit(
                content=messages.noted(job, CANNOT_POST_NOTE.format(job_id=job.id)),
                embed=None,
                attachments=[],
                view=None,
            )

    async def find_shown(self, job: Job) -> Shown | None:
        """Where Discord already shows `job`'s final state, if it does; None when unsure.

        After a crash the bot cannot know whether its last edit or post reached Discord, so
        it looks: the job's own message first, then the channel just after the job finished.
        """
        if job.message_id is not None:
            message = await self._fetch(job, job.message_id)
            if message is not None and _shows_final_state(job, message):
                return Shown(job.channel_id, message.id)
        finished = parse_time(job.finished_at)
        if finished is None or self.client.user is None:
            return None
        channel = self.client.get_partial_messageable(job.channel_id)
        after = discord.Object(discord.utils.time_snowflake(finished - timedelta(seconds=5)))
        try:
            async for message in channel.history(limit=HISTORY_SCAN, after=after, oldest_first=True):
                if message.author.id == self.client.user.id and _shows_final_state(job, message):
                    if job.message_id is not None and message.id != job.message_id:
                        await self._point_at(channel, job, message)
                    return Shown(job.channel_id, message.id)
        except discord.HTTPException as exc:
            log.warning("job %s: cannot read the channel to check for a result (%s)", job.id, exc)
        return None

    async def find_announcement(self, job: Job) -> int | None:
        """The id of the message that announced `job`, when a crash kept the bot from recording it.

        Discord had taken the "Waiting to start" message (it carries the job's Cancel button) when
        the bot died; it is in the channel from shortly before the job was queued.
        """
        created = parse_time(job.created_at)
        if created is None or self.client.user is None:
            return None
        cancel_id = f"dg:cancel:{job.id}"
        channel = self.client.get_partial_messageable(job.channel_id)
        # The message is the /imagine's deferral, made before the row: under a burst the admission
        # queue can hold the row back for a while, so look from well before it.
        after = discord.Object(discord.utils.time_snowflake(created - ANNOUNCE_LOOKBACK))
        try:
            async for message in channel.history(limit=HISTORY_SCAN, after=after, oldest_first=True):
                if message.author.id == self.client.user.id and cancel_id in _custom_ids(message):
                    return message.id
        except discord.HTTPException as exc:
            log.warning("job %s: cannot read the channel to find its message (%s)", job.id, exc)
        return None

    async def _fetch(self, job: Job, message_id: int) -> discord.Message | None:
        webhook = self._webhook(job)
        if webhook is not None:
            try:
                return await webhook.fetch_message(message_id)
            except discord.HTTPException as exc:
                # A token that expired while the bot was down: the bot's own token can still read it.
                log.info("job %s: cannot fetch message %s with the interaction token (%s)", job.id, message_id, exc)
        try:
            return await self.client.get_partial_messageable(job.channel_id).fetch_message(message_id)
        except discord.HTTPException as exc:
            log.info("job %s: cannot fetch message %s (%s)", job.id, message_id, exc)
            return None

    async def _point_at(self, channel: discord.PartialMessageable, job: Job, result: discord.Message) -> None:
        """Point the old progress message at the result instead of leaving it at "57%"."""
        assert job.message_id is not None
        first_line = result.content.splitlines()[0] if result.content else ""
        with contextlib.suppress(discord.HTTPException):
            await channel.get_partial_message(job.message_id).edit(
                content=messages.fit(first_line, f"Finished: {result.jump_url}"), embed=None, attachments=[], view=None
            )


HISTORY_SCAN = 100  # messages after the job finished to look through for its result
ANNOUNCE_LOOKBACK = timedelta(minutes=2)  # how long before its row a job's message may have been made


def _custom_ids(message: discord.Message) -> set[str]:
    ids = set()
    for row in message.components:
        for child in getattr(row, "children", [row]):
            if custom_id := getattr(child, "custom_id", None):
                ids.add(custom_id)
    return ids


def _shows_final_state(job: Job, message: discord.Message) -> bool:
    footers = [e.footer.text or "" for e in message.embeds if e.footer]
    return messages.shows_final_state(job, message.content, footers)
