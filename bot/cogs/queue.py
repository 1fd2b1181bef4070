"""The line: `/queue` (your jobs and how long the line is), `/cancel job_id` and the Cancel button
under a waiting or running job.

Only the member who started a job, or a server admin (Manage Server or the `/config admin_role`,
checked in code since `default_member_permissions` is only a hint), may cancel it. The button is a `DynamicItem`
(`dg:cancel:{job_id}`), so it works on a message of any age, across restarts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, messages
from bot.client import DreamGrid
from bot.errors import UserError
from bot.policy import can_see, is_server_admin
from bot.rows import Job
from bot.store import ACTIVE
from bot.ui import GuardedItem, JobViews

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]


async def _may_cancel(bot: DreamGrid, interaction: Interaction, job: Job) -> bool:
    if interaction.user.id == job.user_id:
        return True
    # A server admin, in the job's own server; in a DM only the owner counts.
    return job.guild_id is not None and interaction.guild_id == job.guild_id and await is_server_admin(bot, interaction)


async def _check(bot: DreamGrid, interaction: Interaction, job_id: int) -> Job:
    """The job, if this member may cancel it and it is still waiting or running."""
    job = await bot.store.get_job(job_id)
    if job is None or not can_see(interaction, job):  # another server's job: not even its owner is named
        raise UserError(f"There is no job {job_id}.")
    if not await _may_cancel(bot, interaction, job):
        raise UserError(messages.cancel_refused(job))
    if job.status not in ACTIVE:
        raise UserError(messages.already_finished(job))
    return job


class CancelButton(GuardedItem[discord.ui.Button], template=r"dg:cancel:(?P<job>\d+)"):
    """Cancel, under "Waiting to start" and the progress; gone once the job has finished."""

    def __init__(self, job_id: int) -> None:
        super().__init__(
            discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"dg:cancel:{job_id}")
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]))

    async def check(self, interaction: Interaction) -> None:
        await _check(interaction.client, interaction, self.job_id)

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        # Acknowledge at once; the job's own message then says "Cancelled" (the scheduler edits it).
        await interaction.response.defer()
        if await bot.scheduler.cancel(self.job_id) is None:
            job = await jobs.job_or_error(bot, interaction, self.job_id)
            await interaction.followup.send(messages.already_finished(job), ephemeral=True)


def progress_view(job: Job) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job.id))
    return view


class Queue(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Your jobs waiting or running, their place in line, and how long the line is")
    async def queue(self, interaction: Interaction) -> None:
        store = self.bot.store
        report = queue_report(
            await store.active_jobs(interaction.user.id),
            await store.queue_order(),
            await store.queue_counts(interaction.guild_id),
            self.bot.scheduler.starts_in,
        )
        await interaction.response.send_message(
            report[:2000], ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(description="Cancel a job that is waiting or running")
    @app_commands.describe(job_id="The job's number, as shown by /info or on its message")
    async def cancel(self, interaction: Interaction, job_id: app_commands.Range[int, 1]) -> None:
        await _check(self.bot, interaction, job_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        job = await self.bot.scheduler.cancel(job_id)
        if job is None:
            job = await jobs.job_or_error(self.bot, interaction, job_id)
            await interaction.followup.send(messages.already_finished(job), ephemeral=True)
            return
        await interaction.followup.send(f"Cancelled job {job_id}.", ephemeral=True)


QUEUE_SHOWN = 15  # of a member's own jobs, in /queue


def queue_report(
    mine: list[Job], order: list[int], counts: tuple[int, int, int], starts_in: Callable[[int], float | None]
) -> str:
    """What /queue says: the member's jobs (running, or their place in line and forecast), then the line."""
    positions = {job_id: n for n, job_id in enumerate(order, start=1)}
    lines = []
    for job in mine[:QUEUE_SHOWN]:
        if job.status == "running":
            state = f"running, {job.progress:.0%}"
        else:
            position = positions.get(job.id, 0)
            state = "next in line" if position <= 1 else f"position {position}"
            forecast = starts_in(position) if job.mode != "relax" else None
            if forecast is not None:
                state += f", {messages.starts_in(forecast)}"
            if job.mode == "relax":
                state += ", Relax"
        prompt = discord.utils.escape_markdown(job.prompt[:60] + ("…" if len(job.prompt) > 60 else ""))
        lines.append(f"`{job.id}` {state}: {prompt or 'your picture'}")
    if len(mine) > QUEUE_SHOWN:
        lines.append(f"…and {len(mine) - QUEUE_SHOWN} more.")
    waiting_here, running_here, waiting_all = counts
    mine_text = "\n".join(lines) if lines else "You have no jobs waiting or running."
    line = f"**The line:** {waiting_here} waiting and {running_here} running here; {waiting_all} waiting in all."
    return f"{mine_text}\n{line}"


def install_views(views: JobViews) -> None:
    views.progress = progress_view


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(CancelButton)
    install_views(bot.views)
    await bot.add_cog(Queue(bot))
