"""Turning what a member asked for into queued jobs, and telling them it was accepted.

`submit` is the one way a job gets queued: it checks who may ask here, builds the jobs,
applies the server's rules and limits, queues them all or none, and shows each one's message.
Commands and buttons only say which jobs they want (a `JobBuilder`).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Awaitable, Callable, Sequence
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord

from bot import edits, kinds, messages, policy
from bot.errors import DEFERRED, UserError
from bot.guild_config import GuildConfig
from bot.kinds import JobKind, Source
from bot.prompt import ParsedPrompt, PromptError, parse_prompt
from bot.rows import ImageRow, Job, NewJob
from bot.spec import DeliveryOptions, EditSpec, InputImage, JobSpec, RenderSpec, ShownValues
from bot.store import QueueFull, UserProfile
from engine import params as render_params
from engine.requests import ImagePromptMethod, refusal

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


def imagine_spec(parsed: ParsedPrompt, *, bot: DreamGrid, model: str, defaults: dict[str, Any]) -> JobSpec:
    """The recorded render request for a prompt: everything needed to render it again."""
    settings = bot.settings
    # The model's own defaults (MODEL_DEFAULTS: a turbo model runs 1–4 steps at guidance 0), then its
    # family's (the engine's: Flux.1 [schnell] 4 steps, no guidance), before the bot's.
    model_defaults = settings.defaults_for(model)
    family = bot.engine.defaults(model)
    base_steps = model_defaults.steps or family.steps or settings.steps
    base_guidance = next(
        g for g in (model_defaults.guidance_scale, family.guidance_scale, settings.guidance_scale) if g is not None
    )
    aspect = parsed.aspect or _aspect(defaults.get("aspect"))
    native = model_defaults.size or bot.engine.native_size(model)
    width, height = render_params.tile_size(aspect[0], aspect[1], native)
    quality = parsed.quality if parsed.quality is not None else defaults.get("quality", render_params.QUALITY_DEFAULT)
    stylize = parsed.stylize if parsed.stylize is not None else defaults.get("stylize", render_params.STYLIZE_DEFAULT)
    steps = min(render_params.steps_for_quality(quality, base=base_steps), settings.max_steps)
    render = RenderSpec(
        prompt=parsed.text,
        negative_prompt=parsed.negative,
        width=width,
        height=height,
        steps=steps,
        # GUIDANCE_SCALE is the guidance at the default --stylize; stylize scales it from there.
        guidance_scale=round(
            render_params.guidance_for_stylize(stylize)
            * base_guidance
            / render_params.guidance_for_stylize(render_params.STYLIZE_DEFAULT),
            3,
        ),
        chaos=parsed.chaos or render_params.CHAOS_DEFAULT,
        stop=parsed.stop or render_params.STOP_DEFAULT,
        tile=parsed.tile,
    )
    return JobSpec(
        render=render, shown=ShownValues(aspect=f"{aspect[0]}:{aspect[1]}", quality=quality, stylize=stylize)
    )


def image_prompt_spec(
    parsed: ParsedPrompt, picture: InputImage, *, bot: DreamGrid, model: str, defaults: dict[str, Any]
) -> JobSpec:
    """An /imagine steered by a member's picture: its shape follows the picture unless `--ar` says otherwise."""
    if parsed.aspect is None:
        ratio = Fraction(picture.width, picture.height).limit_denominator(64)
        parsed = dataclasses.replace(parsed, aspect=(ratio.numerator, ratio.denominator))
    spec = imagine_spec(parsed, bot=bot, model=model, defaults=defaults)
    weight = render_params.IMAGE_WEIGHT_DEFAULT if parsed.image_weight is None else parsed.image_weight
    method = bot.engine.image_prompt_method(model)
    steps = spec.render.steps
    if method is ImagePromptMethod.IMAGE_TO_IMAGE:
        steps = render_params.img2img_steps(steps, render_params.image_prompt_strength(weight))
    spec = spec.replace_render(steps=steps, image_weight=weight, image_prompt_method=method.value)
    return dataclasses.replace(spec, inputs=(picture,))


def blend_spec(
    parsed: ParsedPrompt,
    pictures: Sequence[InputImage],
    *,
    aspect: tuple[int, int],
    bot: DreamGrid,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """A /blend: the chosen dimensions (a prompt's `--ar` wins), mixed by the engine's way for `model`."""
    if parsed.aspect is None:
        parsed = dataclasses.replace(parsed, aspect=aspect)
    spec = imagine_spec(parsed, bot=bot, model=model, defaults=defaults)
    method = bot.engine.image_prompt_method(model)
    steps = spec.render.steps
    strength = render_params.BLEND_STRENGTH
    if method is ImagePromptMethod.IMAGE_TO_IMAGE:
        steps = render_params.img2img_steps(steps, strength)
    spec = spec.replace_render(steps=steps, strength=strength, image_prompt_method=method.value)
    return dataclasses.replace(spec, inputs=tuple(pictures))


def picture_spec(
    parsed: ParsedPrompt,
    picture: InputImage,
    *,
    strength: float,
    bot: DreamGrid,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """A variation or upscale of a member's picture: the picture's size, the prompt's other parameters."""
    spec = imagine_spec(parsed, bot=bot, model=model, defaults=defaults)
    steps = render_params.img2img_steps(spec.render.steps, strength)
    spec = spec.replace_render(width=picture.width, height=picture.height, steps=steps, strength=strength)
    return dataclasses.replace(spec, shown=dataclasses.replace(spec.shown, aspect=None), inputs=(picture,))


def parse_members_prompt(
    bot: DreamGrid,
    profile: UserProfile,
    text: str,
    *,
    with_suffix: bool = True,
    max_jobs: int = 1,
    allow_empty: bool = False,
) -> list[ParsedPrompt]:
    """A member's prompt read with their /prefer options (and suffix), or a UserError saying what is wrong."""
    try:
        return parse_prompt(
            text,
            suffix=profile.suffix if with_suffix else "",
            options=profile.options,
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


def member_mode(settings: dict[str, Any]) -> str:
    """The mode a member's jobs run in unless a prompt says `--fast` or `--relax` (/fast, /relax)."""
    return "relax" if settings.get("mode") == "relax" else "fast"


async def mode_of(bot: DreamGrid, user_id: int) -> str:
    """The member's /fast or /relax mode, for jobs made without a prompt of their own (describe, blend, …)."""
    return member_mode((await bot.store.profile(user_id)).settings)


def _aspect(value: Any) -> tuple[int, int]:
    """A default aspect as /settings and /config store it ("3:2"), or a pair."""
    if isinstance(value, str):
        width, _, height = value.partition(":")
        return int(width), int(height)
    return tuple(value) if value else (1, 1)  # type: ignore[return-value]


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
    # The interaction says how large an upload this channel takes; results are fitted to it.
    delivery = DeliveryOptions(upload_limit=interaction.filesize_limit, spoiler_flagged=spec.delivery.spoiler_flagged)
    return NewJob(
        kind=kind.name,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,  # type: ignore[arg-type]
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
    if strength is None and kinds.get(parent.kind) is kind:  # 🔄 on a variation of a picture: as strong again
        strength = parent.spec.render.strength
    spec = dataclasses.replace(parent.spec, edit=None)  # a variation of a zoomed picture is no zoom
    if kind.source is Source.PARENT_TILE and index is not None:
        # The picture's own size: an upscale's is its kind's scale times what its job started from.
        row = next((r for r in await bot.store.get_images(parent.id) if r.idx == index), None)
        if row is not None:
            spec = spec.replace_render(width=row.width, height=row.height)
    text = parent.prompt
    model = bot.settings.model_name(parent.model)  # recorded as a source before models had short names
    profile = await bot.store.profile(interaction.user.id)
    mode = member_mode(profile.settings)
    if prompt is not None and prompt != parent.prompt:
        policy.check_remix(config)
        # A remixed prompt is parsed like a new one; a kind drawn from a tile keeps the tile's size.
        parsed = parse_members_prompt(bot, profile, prompt, with_suffix=False)[0]
        model = parsed.model or model
        mode = parsed.mode or mode
        fresh = imagine_spec(parsed, bot=bot, model=model, defaults=profile.settings)
        if kind.steered_by_weight:  # a remixed image prompt keeps its picture
            fresh = image_prompt_spec(parsed, spec.inputs[0], bot=bot, model=model, defaults=profile.settings)
        elif kind.source is Source.UPLOADS:  # and a remixed variation of a picture its picture and size
            assert strength is not None  # a picture's kinds redraw it at a named strength
            fresh = picture_spec(
                parsed, spec.inputs[0], strength=strength, bot=bot, model=model, defaults=profile.settings
            )
        if kind.keeps_parent_size:
            fresh = dataclasses.replace(
                fresh.replace_render(width=spec.render.width, height=spec.render.height),
                shown=dataclasses.replace(fresh.shown, aspect=spec.shown.aspect),
            )
        spec, text = fresh, parsed.raw
    if kind.source is not Source.UPLOADS:  # drawn from the parent's tile, or from text: not its picture
        spec = dataclasses.replace(spec, inputs=()).replace_render(image_weight=None, image_prompt_method=None)
    steps = spec.render.steps
    if strength is not None:
        steps = render_params.img2img_steps(steps, strength, minimum=kind.min_steps)
    spec = spec.replace_render(steps=steps, strength=strength)
    if edit is not None:
        width, height = edits.result_size(edit, spec.render.width, spec.render.height)
        # An edit finishes a picture on a new canvas: --stop and --tile do not apply to it.
        spec = dataclasses.replace(spec, edit=edit).replace_render(
            width=width, height=height, stop=render_params.STOP_DEFAULT, tile=False
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
        content = messages.waiting(job, position) if position else messages.progress(job, 0)
        message_id = await _show(interaction, content, bot.views.progress(job), first=n == 0)
        if message_id is not None:
            await bot.store.set_message(job.id, message_id)
        bot.scheduler.announced(job.id)
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
