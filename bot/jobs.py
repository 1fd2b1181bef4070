"""Turning what a member asked for into queued jobs, and telling them it was accepted.

`submit` is the one way a job gets queued: it checks who may ask here, builds the jobs,
applies the server's rules and limits, queues them all or none, and shows each one's message.
Commands and buttons only say which jobs they want (a `JobBuilder`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import kinds, messages, policy, spec_builders, styles
from bot.errors import DEFERRED, UserError
from bot.guild_config import GuildConfig
from bot.kinds import JobKind, Source
from bot.prompt import ParsedPrompt, PromptError, parse_prompt
from bot.rows import ImageRow, Job, NewJob
from bot.spec import DeliveryOptions, EditSpec, JobSpec
from bot.store import QueueFull, UserProfile
from engine.requests import Feature, refusal

if TYPE_CHECKING:
    from bot.client import DreamGrid

log = logging.getLogger(__name__)

ALREADY_ACKNOWLEDGED = 40060

# Given the server's settings (once the member may use the bot here), the jobs to queue; none
# when the request ended another way (e.g. a Remix modal opened instead).
JobBuilder = Callable[[GuildConfig], Awaitable[Sequence[NewJob]]]


async def acknowledge(interaction: discord.Interaction) -> bool:
    """Defer at once, before any database work: Discord's 3 s are for this, not for the queue.

    False when Discord no longer takes the interaction (it came too late, the member already saw
    "The application did not respond"): then nothing may be queued for it.
    """
    try:
        await interaction.response.defer(thinking=True)
    except discord.HTTPException as exc:
        if exc.code != ALREADY_ACKNOWLEDGED:  # 40060: an earlier try was applied, its answer was lost
            log.warning("interaction %s could not be acknowledged (%s); nothing was queued", interaction.id, exc)
            return False
    interaction.extras[DEFERRED] = True
    return True


def parse_members_prompt(
    bot: DreamGrid,
    config: GuildConfig,
    profile: UserProfile,
    text: str,
    *,
    with_suffix: bool = True,
    max_jobs: int = 1,
    allow_empty: bool = False,
) -> list[ParsedPrompt]:
    """A member's prompt read with their /prefer options (and suffix) and the server's aliases, or a
    UserError saying what is wrong."""
    try:
        return parse_prompt(
            text,
            suffix=profile.suffix if with_suffix else "",
            options=profile.options,
            aliases=config["aliases"],
            models=bot.settings.installed_models,
            max_jobs=max_jobs,
            allow_empty=allow_empty,
        )
    except PromptError as exc:
        raise UserError(str(exc)) from None


def prompt_job(
    interaction: discord.Interaction,
    kind: JobKind,
    parsed: ParsedPrompt,
    spec: JobSpec,
    *,
    model: str,
    profile: UserProfile,
) -> NewJob:
    """A new job for a member's own prompt: seeds from its --seed, mode from --fast/--relax or /fast, /relax."""
    return new_job(
        interaction,
        kind=kind,
        prompt=parsed.raw,
        spec=spec,
        seeds=kind.seeds(parsed.seed),
        model=model,
        mode=parsed.mode or member_mode(profile.settings),
    )


def prompt_defaults(config: GuildConfig, profile: UserProfile) -> dict[str, Any]:
    """What a prompt gets for what it leaves out: the member's /settings over the server's defaults."""
    return {"aspect": config["default_aspect"], **profile.settings}


def member_mode(settings: dict[str, Any]) -> str:
    """The mode a member's jobs run in unless a prompt says `--fast` or `--relax` (/fast, /relax)."""
    return "relax" if settings.get("mode") == "relax" else "fast"


async def mode_of(bot: DreamGrid, user_id: int) -> str:
    """The member's /fast or /relax mode, for jobs made without a prompt of their own (describe, blend, …)."""
    return member_mode((await bot.store.profile(user_id)).settings)


def new_job(
    interaction: discord.Interaction,
    *,
    kind: JobKind,
    prompt: str,
    spec: JobSpec,
    seeds: Sequence[int],
    model: str,
    mode: str,
    parent_id: int | None = None,
    parent_index: int | None = None,
) -> NewJob:
    assert interaction.channel_id is not None  # Discord names the channel of every command and click
    # The interaction says how large an upload this channel takes; results are fitted to it.
    delivery = DeliveryOptions(upload_limit=interaction.filesize_limit, spoiler_flagged=spec.delivery.spoiler_flagged)
    return NewJob(
        kind=kind.name,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        prompt=prompt,
        spec=dataclasses.replace(spec, delivery=delivery),
        seeds=list(seeds),
        model=model,
        mode=mode,
        parent_id=parent_id,
        parent_index=parent_index,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
    )


async def job_or_error(bot: DreamGrid, interaction: discord.Interaction, job_id: int) -> Job:
    """The job a button or command names, if this member may see it from here (see policy.can_see)."""
    job = await bot.store.get_job(job_id)
    if job is None or not policy.can_see(interaction, job):
        raise UserError(f"Job {job_id} no longer exists.")
    return job


async def child_job(
    bot: DreamGrid,
    interaction: discord.Interaction,
    config: GuildConfig,
    parent: Job,
    *,
    kind: JobKind,
    index: int | None,
    strength: float | None = None,
    prompt: str | None = None,
    edit: EditSpec | None = None,
) -> NewJob:
    """The job a click on `parent` asks for; `prompt` is a Remix edit of the parent's prompt.

    `edit`: what a Zoom, Make Square, Pan or Vary (Region) button chose for image `index`.
    """
    if kind is kinds.REROLL and parent.spec.edit is not None and parent.parent_id is not None:
        # 🔄 under an edit's grid draws the same edit of the same picture again, with new seeds.
        source = await job_or_error(bot, interaction, parent.parent_id)
        edited = kinds.get(parent.kind)
        return await child_job(
            bot,
            interaction,
            config,
            source,
            kind=edited,
            index=parent.parent_index,
            strength=edited.default_strength,
            prompt=prompt,
            edit=parent.spec.edit,
        )
    # The picture's own size: an upscale's is its kind's scale times what its job started from.
    size = None
    if kind.source is Source.PARENT_TILE and index is not None:
        row = next((r for r in await bot.store.get_images(parent.id) if r.idx == index), None)
        if row is not None:
            size = (row.width, row.height)
    model = bot.settings.model_name(parent.model)  # recorded as a source before models had short names
    profile = await bot.store.profile(interaction.user.id)
    mode = member_mode(profile.settings)
    remix = None
    if kind.full_quality and prompt is None:  # the draft's own prompt, without --draft
        undrafted = dataclasses.replace(
            parse_members_prompt(bot, config, profile, parent.prompt, with_suffix=False)[0], draft=False
        )
        remix = dataclasses.replace(undrafted, raw=undrafted.to_text())
    elif prompt is not None and prompt != parent.prompt:
        if not (kind.asks_prompt or kind.makes_clip):  # for such a kind the new prompt is the point, not a Remix
            policy.check_remix(config)
        remix = parse_members_prompt(bot, config, profile, prompt, with_suffix=False)[0]  # parsed like a new prompt
        (remix,) = await styles.prepare(bot, interaction, config, [remix])
        mode = remix.mode or mode
    style_inputs = parent.spec.style_inputs
    if remix is not None and styles.picture_references(remix) != styles.picture_references(
        parse_members_prompt(bot, config, profile, parent.prompt, with_suffix=False)[0]
    ):  # a Remix that names other --sref pictures: read them as a new prompt's
        style_inputs = await styles.style_pictures(bot, interaction, remix)
    spec, text, model = spec_builders.child_spec(
        parent,
        kind,
        source_size=size,
        strength=strength,
        remix=remix,
        edit=edit,
        model=model,
        defaults=prompt_defaults(config, profile),
        settings=bot.settings,
        engine=bot.engine,
        style_inputs=style_inputs,
    )
    return new_job(
        interaction,
        kind=kind,
        prompt=text,
        spec=spec,
        seeds=kind.seeds(),
        model=model,
        mode=mode,
        parent_id=parent.id,
        parent_index=index,
    )


def redraw(interaction: discord.Interaction, job: Job) -> NewJob:
    """The same request again: same seeds and batch, so the same pixels."""
    return new_job(
        interaction,
        kind=kinds.get(job.kind),
        prompt=job.prompt,
        spec=job.spec,
        seeds=job.seeds,
        model=job.model,
        mode=job.mode,
        parent_id=job.parent_id,
        parent_index=job.parent_index,
    )


async def stored_or_redraw(
    bot: DreamGrid, interaction: discord.Interaction, job: Job, *, then: str
) -> tuple[list[ImageRow], list[Path]] | None:
    """The job's stored images and their files; if the files are gone, draw the job again.

    The redraw is the recorded request with the same seeds, so it gives the same pixels; the
    member is told, ephemerally, what to do `then` on the new grid. Returns None in that case.
    """
    if job.status != "done":  # e.g. a queued job: nothing to show, and drawing it twice would be wrong
        raise UserError(f"Job {job.id} isn't finished yet ({job.status}); its images aren't ready.")
    rows = await bot.store.get_images(job.id)
    paths = [bot.settings.data_dir / row.path for row in rows]
    if rows and all(path.exists() for path in paths):
        return rows, paths

    async def build(config: GuildConfig) -> list[NewJob]:
        return [redraw(interaction, job)]

    await submit(bot, interaction, build)
    await interaction.followup.send(
        f"The images of job {job.id} were no longer stored, so it is being drawn again with the same seeds; {then}",
        ephemeral=True,
    )
    return None


async def submit(bot: DreamGrid, interaction: discord.Interaction, build: JobBuilder) -> list[Job]:
    """Queue the jobs `build` makes (each a row before the member hears of it) and show each one's message.

    All or nothing: when the jobs would go over a limit, none is queued and the member gets
    the reason, with the numbers, ephemerally.
    """
    # 1. who and where: the channel, banned members
    config = await policy.gate(bot, interaction)
    # 2. what they asked for
    wanted = await build(config)
    if not wanted:
        return []
    # 3. the server's rules: words, models, steps and size, quotas, fast time
    shaped, limits = await policy.admit(bot, interaction, config, wanted)
    # 3b. what the model's family cannot draw (Flux.1 has no --no, no transformer does --tile): never queued
    for queued in shaped:
        request = queued.spec.render.request(
            action=kinds.get(queued.kind).action, seeds=queued.seeds, model=queued.model
        )
        reason = refusal(bot.engine, request)
        if reason is None and queued.spec.style_inputs:  # --sref pictures are loaded at render time
            reason = bot.engine.supports(queued.model, Feature.STYLE_REFERENCE)
        if reason is None and queued.spec.end is not None:  # Animate's end picture
            reason = bot.engine.supports(queued.model, Feature.END_FRAME)
        if reason is not None:
            raise UserError(reason)
    relaxed = sum(1 for before, after in zip(wanted, shaped, strict=True) if before.mode != after.mode)
    # 4. queue them, all or none
    try:
        accepted = await bot.store.enqueue_many(shaped, limits)
    except QueueFull as exc:
        raise UserError(str(exc)) from None
    bot.scheduler.wake()
    # 5. show each one: positions are read once for the whole submission
    order = await bot.store.queue_order()
    positions = {job_id: n for n, job_id in enumerate(order, start=1)}
    for n, job in enumerate(accepted):
        position = positions.get(job.id, 0)
        if position:
            content = messages.waiting(job, position, bot.scheduler.starts_in(position))
        else:
            content = messages.progress(job, 0)
        message_id = await _show(interaction, content, bot.views.progress(job), first=n == 0)
        if message_id is not None:
            await bot.store.set_message(job.id, message_id)
        bot.scheduler.announced(job.id, content if position else None)
    if relaxed:
        await interaction.followup.send(messages.fast_time_used_up(config["fast_hours"]), ephemeral=True)
    return accepted


async def _show(
    interaction: discord.Interaction, content: str, view: discord.ui.View | None, *, first: bool
) -> int | None:
    """Post a job's "Waiting to start" message; its id, or None (the result then goes to the channel).

    The first message replaces a deferred "thinking…" with an edit, which is safe to retry;
    if Discord applied a reply but its answer was lost (a 502), the reply is looked up instead
    of leaving a stale message behind.
    """
    kwargs = _view_kwargs(view)
    try:
        if not interaction.response.is_done():
            return (await interaction.response.send_message(content, **kwargs)).message_id
        if first and interaction.extras.get(DEFERRED):
            return (await interaction.edit_original_response(content=content, **kwargs)).id
        return (await interaction.followup.send(content, wait=True, **kwargs)).id
    except discord.HTTPException as exc:
        log.warning("interaction %s: showing a queued job failed (%s); looking for it", interaction.id, exc)
    if not first:
        return None
    try:
        original = await interaction.original_response()
    except discord.HTTPException:
        return None
    if original.content != content:  # a deferral Discord took, or a different reply: make it this job's
        try:
            original = await original.edit(content=content, **kwargs)
        except discord.HTTPException:
            return None
    return original.id


def _view_kwargs(view: discord.ui.View | None) -> dict[str, Any]:
    return {"view": view} if view is not None else {}
