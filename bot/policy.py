"""The server's rules (`/config`), checked before a job is created.

`bot.jobs.submit` runs both: `gate` first (the channel, banned members), then `admit` on the
jobs themselves just before they are queued (banned words, models, steps and
size, the safety checker, free disk space) and gives the queue limits that apply (the daily
quotas among them, which the store checks as it queues). Every refusal
is a `UserError`: one short ephemeral line for the member, and nothing queued.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import discord

from bot import disk, kinds
from bot.errors import UserError
from bot.guild_config import MODEL_SIZE_FACTOR, GuildConfig
from bot.kinds import JobKind
from bot.rows import Job, NewJob
from bot.spec import JobSpec
from bot.store import QueueLimits, waiting_limit_message
from engine import params as render_params

if TYPE_CHECKING:
    from bot.client import DreamGrid
    from bot.prompt import ParsedPrompt

log = logging.getLogger(__name__)

MAX_CHANNELS_SHOWN = 5


async def gate(bot: DreamGrid, interaction: discord.Interaction) -> GuildConfig:
    """May this member use the bot here at all? Returns the server's settings (in DMs, the bot's)."""
    config = await bot.guild_configs.get(interaction.guild_id)
    if interaction.user.id in bot.settings.banned_users:
        raise UserError("You can't use dreamgrid. If you think that's a mistake, ask the bot's operator.")
    if interaction.guild_id is None:
        if not bot.settings.allow_dms:
            raise UserError("I only draw in servers: use me in a server channel.")
        return config
    if interaction.user.id in config["banned_members"]:
        raise UserError("You can't use dreamgrid on this server. If you think that's a mistake, ask a server admin.")
    channels = config["channels"]
    if channels and not ({interaction.channel_id, getattr(interaction.channel, "parent_id", None)} & set(channels)):
        shown = ", ".join(f"<#{c}>" for c in channels[:MAX_CHANNELS_SHOWN])
        more = f" and {len(channels) - MAX_CHANNELS_SHOWN} more" if len(channels) > MAX_CHANNELS_SHOWN else ""
        raise UserError(f"I don't draw in this channel. Try {shown}{more}.")
    return config


def can_see(interaction: discord.Interaction, job: Job) -> bool:
    """The one rule for naming a job: the member's own job anywhere; anyone else's only if the
    member can read the channel it was posted in, from inside that job's server.

    Every way of naming a job goes through it (buttons, selects and modals carry a job id that a
    member can forge; commands and the Apps menu take one), so a picture drawn in a private
    channel never reaches someone who cannot read that channel, and a job from another server is
    treated as not existing.
    """
    if job.user_id == interaction.user.id:
        return True
    guild = interaction.guild
    if job.guild_id is None or guild is None or job.guild_id != guild.id:
        return False
    channel = guild.get_channel_or_thread(job.channel_id)
    member = interaction.user
    # A channel the bot no longer knows (deleted, or a thread out of its cache) is not readable.
    return channel is not None and isinstance(member, discord.Member) and channel.permissions_for(member).view_channel


async def is_server_admin(bot: DreamGrid, interaction: discord.Interaction) -> bool:
    """Manage Server, or the role `/config admin_role` names, in the server the interaction is from.

    Checked in code: `default_member_permissions` only decides who sees a command.
    """
    if interaction.guild_id is None or not isinstance(interaction.user, discord.Member):
        return False
    if interaction.permissions.manage_guild:
        return True
    admin_role = (await bot.guild_configs.get(interaction.guild_id))["admin_role"]
    return bool(admin_role) and any(role.id == admin_role for role in interaction.user.roles)


def check_repeat(config: GuildConfig, parsed: Sequence[ParsedPrompt]) -> None:
    if config["repeat_allowed"]:
        return
    if any(p.repeat > 1 for p in parsed):
        raise UserError("`--repeat` is turned off on this server.")
    if len(set(parsed)) < len(parsed):  # `{cat, cat, cat}` is --repeat by another name
        raise UserError("`--repeat` is turned off on this server, and so are {choices} that repeat a prompt.")


def check_remix(config: GuildConfig) -> None:
    if not config["remix_allowed"]:
        raise UserError("Remix is turned off on this server, so the prompt can't be edited here.")


def check_model(config: GuildConfig, model: str) -> None:
    allowed = config.allowed_models
    if config.settings.model_name(model) not in allowed:
        raise UserError(
            f"The model `{model}` isn't allowed on this server: use {', '.join(f'`{m}`' for m in allowed)}."
        )


def check_loras_fit(bot: DreamGrid, config: GuildConfig, names: Sequence[str]) -> None:
    """/config loras: each named LoRA must fit a model this server allows (refused now, not at a render)."""
    sources = bot.settings.lora_sources
    for name in names:
        if name not in sources:
            continue  # `none`
        reasons = [bot.engine.lora_refusal(model, sources[name]) for model in config.allowed_models]
        if all(reason is not None for reason in reasons):
            raise UserError(f"`loras`: the LoRA `{name}` can't be used here: {reasons[0]}.")


async def resolve_loras(bot: DreamGrid, config: GuildConfig, spec: JobSpec) -> JobSpec:
    """The spec with each LoRA's file found for its name (the bot's LoRAs this server allows, and
    members' style codes), or a UserError naming the one that is not there or not allowed.

    A LoRA recorded with its file (🔄, a redraw) keeps that file while its name is still allowed.
    """
    loras = spec.render.loras
    if not loras:
        return spec
    if config.loras_off:
        raise UserError("LoRAs are turned off on this server.")
    allowed = {name.lower(): (name, path) for name, path in config.allowed_loras.items()}
    resolved = []
    for lora in loras:
        found = allowed.get(lora.name.lower())
        if found is None:
            style = await bot.store.style_code(lora.name.lower())
            found = (style.code, style.path) if style is not None else None
        if found is None:
            if lora.name.lower() in {name.lower() for name in bot.settings.lora_sources}:
                raise UserError(f"The LoRA `{lora.name}` isn't allowed on this server.")
            choices = ", ".join(f"`{name}`" for name in list(config.allowed_loras)[:8])
            if not choices:
                raise UserError(f"Unknown LoRA `{lora.name[:40]}`: use a /tune style code (this server has no others).")
            raise UserError(f"Unknown LoRA `{lora.name[:40]}`: use one of {choices}, or a /tune style code.")
        name, path = found
        if lora.path and lora.path != path and not await bot.store.is_style_file(lora.path):
            raise UserError(f"The LoRA `{lora.name}` has changed since this job was drawn: name it in a new prompt.")
        resolved.append(dataclasses.replace(lora, name=name, path=lora.path or path))
    return spec.replace_render(loras=tuple(resolved))


async def check_words(
    bot: DreamGrid, interaction: discord.Interaction, config: GuildConfig, prompts: Iterable[str]
) -> None:
    """Refuse a prompt with a banned word or pattern, and record the attempt for the admins."""
    for prompt in dict.fromkeys(prompts):  # --repeat copies are matched once
        rule = config.banned_match(prompt)
        if rule is None:
            continue
        if interaction.guild_id is not None and interaction.channel_id is not None:
            await bot.store.log_moderation(
                interaction.guild_id, interaction.channel_id, interaction.user.id, prompt, rule
            )
        log.info("guild %s: refused a prompt from %s for %r", interaction.guild_id, interaction.user.id, rule)
        what = f"the pattern `{rule}`" if rule.startswith("/") else f"the word `{rule}`"
        raise UserError(f"Your prompt matches {what}, which this server doesn't allow. Nothing was queued.")


def size_limit(config: GuildConfig, native: int) -> int:
    """The longest side this server allows for a model whose tiles are `native` px: /config's, or 4x the tile."""
    return config["max_image_size"] or MODEL_SIZE_FACTOR * native


def apply_limits(
    kind: JobKind, spec: JobSpec, config: GuildConfig, *, native: int = 512, checkable: bool = True
) -> JobSpec:
    """Cap steps and size to the server's limits, and ask for the safety checker when it is on.

    `native`: the model's tile size, for the default size limit (an SDXL upscale of a 3:2 tile is
    2432 px long: refused by SD1.5's 2048). `checkable`: the job's model has a safety checker
    (without one, asking would only turn off the progress previews, withheld from what a checker
    has not seen).
    """
    render = spec.render
    limit_steps = config["max_steps"]
    if render.strength:
        # Image-to-image runs int(steps × strength) of them: a low max_steps must still leave it a few.
        limit_steps = render_params.img2img_steps(limit_steps, render.strength, minimum=kind.min_steps)
    steps = min(render.steps, limit_steps)
    width, height = render.width, render.height
    limit = size_limit(config, native)
    if max(width, height) * kind.scale > limit:
        if not kind.may_shrink_to_limit:
            raise UserError(
                f"That would make a {width * kind.scale}×{height * kind.scale} image: this server allows up to"
                f" {limit} px on a side."
            )
        width, height = fit(width, height, limit)
    return dataclasses.replace(
        spec,
        render=dataclasses.replace(
            render,
            steps=steps,
            width=width,
            height=height,
            safety_check=bool(config["safety_checker"]) and checkable,
        ),
        delivery=dataclasses.replace(spec.delivery, spoiler_flagged=config["spoiler_flagged"], size_limit=limit),
    )


def fit(width: int, height: int, limit: int) -> tuple[int, int]:
    """Scale down to `limit` on the longer side, keeping the aspect; multiples of 8 (the VAE's factor)."""
    factor = limit / max(width, height)
    return max(8, int(width * factor) // 8 * 8), max(8, int(height * factor) // 8 * 8)


def daily_quota(config: GuildConfig, member: discord.abc.User) -> int | None:
    """Jobs a day for this member, or None for no quota; the highest role quota wins over daily_quota."""
    role_ids = {str(role.id) for role in getattr(member, "roles", ())}
    by_role = [quota for role, quota in config["role_quotas"].items() if role in role_ids]
    if by_role:
        return None if 0 in by_role else max(by_role)
    return config["daily_quota"] or None


def check_free_space(bot: DreamGrid) -> None:
    """Refuse new jobs before the disk fills, rather than fail them after rendering."""
    settings = bot.settings
    try:
        free = disk.free_bytes(settings.data_dir)
    except OSError:
        log.warning("cannot measure the free space of %s", settings.data_dir, exc_info=True)
        return
    if free < settings.min_free_disk_mb * 1024 * 1024:
        log.error(
            "refusing new jobs: %s has %d MiB free (MIN_FREE_DISK_MB=%d)",
            settings.data_dir,
            free // (1024 * 1024),
            settings.min_free_disk_mb,
        )
        raise UserError("The bot's storage is nearly full, so it isn't taking new jobs right now. Please try later.")


async def check_waiting_room(bot: DreamGrid, interaction: discord.Interaction, config: GuildConfig, count: int) -> None:
    """Refuse `count` jobs the member's waiting limit could never take (enqueue_many checks again, atomically)."""
    limit = config["max_queued_per_user"]
    waiting = (await bot.store.user_stats(interaction.user.id)).queued
    if waiting + count > limit:
        raise UserError(waiting_limit_message(count, waiting, limit))


def safety_checker_state(bot: DreamGrid, config: GuildConfig) -> str:
    """What /config safety_checker really does on this server: which models it checks."""
    models = config.allowed_models
    checked = [m for m in models if bot.engine.has_safety_checker(m)]
    unchecked = ", ".join(f"`{m}`" for m in models if m not in checked)
    if not checked:
        return "no model here has a safety checker, so nothing can be checked"
    if not config["safety_checker"]:
        return "off: " + ", ".join(f"`{m}`" for m in checked) + " could be checked"
    return "checks " + ", ".join(f"`{m}`" for m in checked) + (f"; {unchecked} have none" if unchecked else "")


def queue_limits(bot: DreamGrid, config: GuildConfig, member: discord.abc.User) -> QueueLimits:
    """The limits the store checks in the same transaction as the insert: no burst slips past them."""
    return QueueLimits(
        config["max_running_per_user"],
        config["max_queued_per_user"],
        bot.settings.max_queue,
        daily_quota(config, member) if config.guild_id is not None else None,
        bot.settings.daily_quota or None,
    )


async def admit(
    bot: DreamGrid, interaction: discord.Interaction, config: GuildConfig, new_jobs: Sequence[NewJob]
) -> tuple[list[NewJob], QueueLimits]:
    """The jobs as the server's rules shape them, and the queue limits; or a UserError.

    `config` comes from `gate`, which has let this member ask here.
    """
    # 1. room to keep the result
    check_free_space(bot)
    # 2. what they asked for
    await check_words(bot, interaction, config, (job.prompt for job in new_jobs))
    for job in new_jobs:
        check_model(config, job.model)
    new_jobs = [dataclasses.replace(job, spec=await resolve_loras(bot, config, job.spec)) for job in new_jobs]
    shaped = [
        dataclasses.replace(
            job,
            spec=apply_limits(
                kinds.get(job.kind),
                job.spec,
                config,
                native=bot.settings.defaults_for(job.model).size or bot.engine.native_size(job.model),
                checkable=bot.engine.has_safety_checker(job.model),
            ),
        )
        for job in new_jobs
    ]
    # 3. fast time: once this month's is used up, jobs relax (the member is told)
    if any(job.mode == "fast" for job in shaped) and await fast_time_left(bot, interaction, config) == 0:
        shaped = [dataclasses.replace(job, mode="relax") for job in shaped]
    # 4. how much they may use: checked by the store as it queues them
    return shaped, queue_limits(bot, config, interaction.user)


async def fast_time_left(bot: DreamGrid, interaction: discord.Interaction, config: GuildConfig) -> float | None:
    """Seconds of Fast device time the member has left this month on this server; None: no limit."""
    hours = config["fast_hours"]
    if not hours:
        return None
    used = await bot.store.fast_seconds_this_month(interaction.user.id, interaction.guild_id)
    return max(0.0, hours * 3600 - used)
