"""Turning what a member asked for into queued jobs, and telling them it was accepted."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import discord

from bot import messages, policy
from bot.errors import UserError
from bot.image_inputs import StoredInput
from bot.prompt import ParsedPrompt
from bot.store import Job, NewJob, QueueFull
from engine import params as render_params
from engine.requests import ImagePromptMethod

if TYPE_CHECKING:
    from bot.client import DreamGrid

MAX_SEED = 4_294_967_295


def seeds_for(seed: int | None, count: int = 4) -> list[int]:
    """Midjourney's rule: `--seed N` gives tiles N, N+1, …; no seed gives random ones."""
    if seed is None:
        return [secrets.randbelow(MAX_SEED + 1) for _ in range(count)]
    return [(seed + i) % (MAX_SEED + 1) for i in range(count)]


def imagine_params(parsed: ParsedPrompt, *, bot: DreamGrid, model: str, defaults: dict[str, Any]) -> dict[str, Any]:
    """The recorded render request for a prompt: everything needed to render it again."""
    settings = bot.settings
    aspect = parsed.aspect or _aspect(defaults.get("aspect"))
    native = bot.engine.native_size(model)
    width, height = render_params.size_for_aspect(aspect[0], aspect[1], native * native, max(8, native // 8))
    quality = parsed.quality if parsed.quality is not None else defaults.get("quality", 1)
    stylize = parsed.stylize if parsed.stylize is not None else defaults.get("stylize", render_params.STYLIZE_DEFAULT)
    steps = min(render_params.steps_for_quality(quality, base=settings.steps), settings.max_steps)
    return {
        "prompt": parsed.text,
        "negative_prompt": parsed.negative,
        "width": width,
        "height": height,
        "aspect": f"{aspect[0]}:{aspect[1]}",
        "steps": steps,
        "quality": quality,
        "stylize": stylize,
        # GUIDANCE_SCALE is the guidance at the default --stylize; stylize scales it from there.
        "guidance_scale": round(
            render_params.guidance_for_stylize(stylize)
            * settings.guidance_scale
            / render_params.guidance_for_stylize(render_params.STYLIZE_DEFAULT),
            3,
        ),
        "chaos": parsed.chaos or 0,
        "stop": parsed.stop or 100,
        "tile": parsed.tile,
    }


def image_prompt_params(
    parsed: ParsedPrompt, picture: StoredInput, *, bot: DreamGrid, model: str, defaults: dict[str, Any]
) -> dict[str, Any]:
    """An /imagine steered by a member's picture: its size follows the picture unless `--ar` says otherwise."""
    if parsed.aspect is None:
        ratio = Fraction(picture.width, picture.height).limit_denominator(64)
        parsed = dataclasses.replace(parsed, aspect=(ratio.numerator, ratio.denominator))
    params = imagine_params(parsed, bot=bot, model=model, defaults=defaults)
    image_weight = parsed.image_weight if parsed.image_weight is not None else render_params.IMAGE_WEIGHT_DEFAULT
    method = bot.engine.image_prompt_method(model)
    if method is ImagePromptMethod.IMAGE_TO_IMAGE:
        params["steps"] = render_params.img2img_steps(
            params["steps"], render_params.image_prompt_strength(image_weight)
        )
    return {**params, "input": picture.to_record(), "image_weight": image_weight, "image_prompt_method": method.value}


def _aspect(value: Any) -> tuple[int, int]:
    """A default aspect as /settings and /config store it ("3:2"), or a pair."""
    if isinstance(value, str):
        width, _, height = value.partition(":")
        return int(width), int(height)
    return tuple(value) if value else (1, 1)  # type: ignore[return-value]


def new_job(
    interaction: discord.Interaction,
    *,
    kind: str,
    prompt: str,
    params: dict[str, Any],
    seeds: Sequence[int],
    model: str,
    parent_id: int | None = None,
    parent_index: int | None = None,
) -> NewJob:
    return NewJob(
        kind=kind,
        user_id=interaction.user.id,
        guild_id=interaction.guild_id,
        channel_id=interaction.channel_id,
        prompt=prompt,
        # The interaction says how large an upload this channel takes; results are fitted to it.
        params={**params, "upload_limit": interaction.filesize_limit},
        seeds=list(seeds),
        model=model,
        parent_id=parent_id,
        parent_index=parent_index,
        application_id=interaction.application_id,
        interaction_token=interaction.token,
    )


async def submit(bot: DreamGrid, interaction: discord.Interaction, jobs: Sequence[NewJob]) -> list[Job]:
    """Queue jobs (each a row before the member hears of it) and show each one's message.

    All or nothing: when the jobs would go over a limit, none is queued and the member gets
    the reason, with the numbers, ephemerally.
    """
    jobs, limits = await policy.admit(bot, interaction, jobs)  # the server's /config rules
    try:
        accepted = await bot.store.enqueue_many(jobs, limits)
    except QueueFull as exc:
        raise UserError(str(exc)) from None
    bot.scheduler.wake()
    for job in accepted:
        position = await bot.store.queue_position(job.id)
        content = messages.waiting(job, position) if position else messages.progress(job, 0)
        view = bot.progress_view(job)
        try:
            if not interaction.response.is_done():
                response = await interaction.response.send_message(content, **_view_kwargs(view))
                message_id = response.message_id
            else:
                message_id = (await interaction.followup.send(content, wait=True, **_view_kwargs(view))).id
        except discord.HTTPException:
            message_id = None  # the result will be posted to the channel instead
        if message_id is not None:
            await bot.store.set_message(job.id, message_id)
        bot.scheduler.announced(job.id)
    return accepted


def _view_kwargs(view: discord.ui.View | None) -> dict[str, Any]:
    return {"view": view} if view is not None else {}
