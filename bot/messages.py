"""What a job's message says at each stage. Pure functions: job in, text and embeds out."""

from __future__ import annotations

from collections.abc import Sequence

import discord

from bot import edits, kinds
from bot.clip_files import Clip
from bot.errors import MESSAGE_CHARS, clip
from bot.member_pictures import shown_name
from bot.rows import ImageRow, Job
from engine import params as render_params
from engine.requests import ImagePromptMethod, LoraWeight

PROMPT_PREVIEW_CHARS = 900  # the most of a prompt a status line shows
ERROR_CHARS = 400  # an engine's error, as much as a member needs to read


def _preview(prompt: str, limit: int) -> str:
    """The prompt as bold markdown, at most `limit` characters once escaped."""
    escaped = discord.utils.escape_markdown(prompt)
    if len(escaped) > limit:
        escaped = escaped[: max(0, limit - 1)]
        if (len(escaped) - len(escaped.rstrip("\\"))) % 2:  # never end on half of an escape
            escaped = escaped[:-1]
        escaped += "…"
    return f"**{escaped}**"


def _prompt(job: Job, limit: int) -> str:
    """The prompt preview, or the member's pictures' names when they gave no prompt (all of a blend's)."""
    if not job.prompt.strip() and job.spec.inputs:  # a member's pictures, worked on with no prompt
        names = " + ".join(shown_name(picture.name) for picture in job.spec.inputs)
        return f"Your picture{'s' if len(job.spec.inputs) > 1 else ''} {clip(names, limit)}"
    return _preview(job.prompt, limit)


def _line(job: Job, status: str) -> str:
    """The prompt, who asked, and `status`: within Discord's limit by construction.

    The status (percentage, error, job id) is what the member needs; the prompt preview is
    what gets shortened to make room.
    """
    tile = f" (image #{job.parent_index})" if job.parent_index else ""
    kind = kinds.KINDS.get(job.kind)  # a row from a newer version may name a kind this one lacks
    label = kind.label if kind else ""
    if job.spec.edit is not None and (detail := edits.describe(job.spec.edit)):
        label += f" {detail}"  # " - Zoom Out 2x", " - Pan ➡️", " - Vary (Region) cells 6, 7"
    tail = f"{label}{tile} - <@{job.user_id}>{status}"
    room = MESSAGE_CHARS - len(tail) - 4  # the ** around the prompt
    return f"{_prompt(job, min(room, PROMPT_PREVIEW_CHARS))}{tail}"


def fit(content: str, note: str) -> str:
    """`content` with `note` on a line of its own, `content` shortened so the whole fits."""
    return f"{clip(content, MESSAGE_CHARS - len(note) - 1)}\n{note}"


def tile(job: Job, index: int) -> str:
    tail = f" - Image #{index} <@{job.user_id}>"
    return f"{_prompt(job, PROMPT_PREVIEW_CHARS)}{tail}"


def waiting(job: Job, position: int, starts_in_s: float | None = None) -> str:
    """ "Waiting to start" with the job's place in line and, once jobs have been timed, when it starts."""
    where = "next in line" if position <= 1 else f"position {position}"
    mode = ", Relax: starts when no Fast job waits" if job.mode == "relax" else ""
    eta = f", {starts_in(starts_in_s)}" if starts_in_s is not None and job.mode != "relax" else ""
    return _line(job, f" (Waiting to start, {where}{eta}{mode})")


def starts_in(seconds: float) -> str:
    """A forecast in words: "starts in about 2 min"; rounded, as a forecast should be."""
    if seconds < 15:
        return "starting any moment"
    if seconds < 60:
        return "starts in under a minute"
    if seconds < 3600:
        return f"starts in about {round(seconds / 60)} min"
    return f"starts in about {seconds / 3600:.1f} h".replace(".0 h", " h")


def fast_time_used_up(hours: int) -> str:
    return (
        f"You've used this month's {hours} hours of fast time on this server, so this runs in Relax mode:"
        " it starts when no Fast job waits. Fast time comes back on the 1st (UTC)."
    )


def progress(job: Job, fraction: float) -> str:
    return _line(job, f" ({fraction:.0%})")


def done(job: Job) -> str:
    return _line(job, "")


def failed(job: Job) -> str:
    return _line(job, f"\n:warning: {clip(job.error or 'This job failed.', ERROR_CHARS)} (job {job.id})")


def noted(job: Job, note: str) -> str:
    """The job's line with a note instead of its result (e.g. why the image can't be shown here)."""
    return _line(job, f"\n{clip(note, ERROR_CHARS)} (job {job.id})")


def cancelled(job: Job) -> str:
    return _line(job, f"\n:no_entry_sign: Cancelled. (job {job.id})")


def spoiler_name(job: Job, images: list[ImageRow], filename: str) -> str:
    """`SPOILER_` + filename when the safety checker flagged an image (Discord blurs it until clicked)."""
    if any(i.flagged for i in images) and job.spec.delivery.spoiler_flagged:
        return f"SPOILER_{filename}"
    return filename


def _show_image(embed: discord.Embed, filename: str) -> None:
    # An embed image is never blurred: a spoilered file is left as an attachment, where Discord blurs it.
    if filename.startswith("SPOILER_"):
        embed.add_field(name="Flagged", value="The safety checker flagged this; click to reveal.", inline=False)
    else:
        embed.set_image(url=f"attachment://{filename}")


def already_finished(job: Job) -> str:
    return f"Job {job.id} has already finished ({job.status}); there is nothing to cancel."


def cancel_refused(job: Job) -> str:
    return f"Only <@{job.user_id}>, who started job {job.id}, or a server admin (Manage Server) can cancel it."


def shows_final_state(job: Job, content: str, embed_footers: list[str]) -> bool:
    """Whether a message already shows `job`'s final state: after a crash, don't show it twice."""
    if job.status == "done" and any(footer.startswith(f"/show {job.id} ") for footer in embed_footers):
        return True
    return content.endswith(f"(job {job.id})")  # a failure, a cancellation, or a result told in words


# How a blend mixed its pictures, in the member's words.
BLEND_METHODS = {
    ImagePromptMethod.IP_ADAPTER.value: "mixed through the IP-Adapter (the pictures' embeddings, averaged)",
    ImagePromptMethod.IMAGE_TO_IMAGE.value: "mixed in the model's latent space (no IP-Adapter installed)",
}


def result_embed(job: Job, images: list[ImageRow], filename: str) -> discord.Embed:
    render = job.spec.render
    embed = discord.Embed(
        description=(job.prompt[:4000] if len(job.prompt) <= 4000 else job.prompt[:3999] + "…") or None,
        colour=discord.Colour.blurple(),
    )
    width, height = (images[0].width, images[0].height) if images else (render.width, render.height)
    seeds = [i.seed for i in images] or list(job.seeds)
    kind = kinds.KINDS.get(job.kind)
    if seeds and list(render_params.tile_seeds(seeds[0], len(seeds))) == seeds:
        again = f" (`--seed {seeds[0]}` draws this again)" if kind and kind.source is kinds.Source.NONE else ""
        embed.add_field(name="Seed", value=f"{seeds[0]}{again}", inline=False)
    else:  # recorded before tile seeds were mixed from the job's seed: each tile's own
        embed.add_field(name="Seeds", value=", ".join(map(str, seeds)), inline=False)
    try:
        parts = render_params.prompt_parts(render.prompt)
    except render_params.ParameterError:  # recorded before `::` was read: the prompt above says it all
        parts = ()
    if len(parts) > 1:  # a `::` multi-prompt: each part as it was weighed
        embed.add_field(name="Weights", value=render_params.parts_text(parts)[:1024], inline=False)
    embed.add_field(name="Size", value=f"{width}×{height}")
    embed.add_field(name="Steps", value=str(render.steps))
    # Whatever set them (the prompt, /settings or the server), the values the job ran with.
    shown = job.spec.shown
    if shown.aspect:
        embed.add_field(name="Aspect", value=shown.aspect)
    if shown.quality is not None:
        embed.add_field(name="Quality", value=render_params.quality_text(shown.quality))
    if shown.stylize is not None:
        embed.add_field(name="Stylize", value=str(shown.stylize))
    if render.chaos:
        embed.add_field(name="Chaos", value=str(render.chaos))
    embed.add_field(name="Model", value=job.model[:1000])
    if render.loras:
        embed.add_field(name="LoRAs" if len(render.loras) > 1 else "LoRA", value=lora_text(render.loras)[:1024])
    embed.add_field(name="Job", value=str(job.id))
    if job.parent_id:
        embed.add_field(
            name="From", value=f"job {job.parent_id}" + (f", image {job.parent_index}" if job.parent_index else "")
        )
    if len(job.spec.inputs) > 1:  # a blend
        pictures = " + ".join(shown_name(p.name) for p in job.spec.inputs)
        how = BLEND_METHODS.get(render.image_prompt_method or "", render.image_prompt_method or "")
        embed.add_field(name="Blend", value=f"{pictures}, {how}"[:1024], inline=False)
    elif job.spec.inputs:
        picture = shown_name(job.spec.inputs[0].name)
        if render.image_prompt_method:
            weight = f"{render.image_weight:g}" if render.image_weight is not None else "1"
            embed.add_field(name="Image prompt", value=f"{picture} via {render.image_prompt_method}, --iw {weight}")
        else:
            name, note = kind.input_field if kind else ("Picture", "yours")
            embed.add_field(name=name, value=f"{picture}, {note}")
    style = style_text(job)
    if style:
        embed.add_field(name="Style", value=style[:1024], inline=False)
    _show_image(embed, filename)
    embed.set_footer(text=f"/show {job.id} brings this back at any time")
    return embed


def clip_embed(job: Job, images: list[ImageRow], filename: str, video: Clip) -> discord.Embed:
    """An Animate or Extend result: the picture's fields, and the clip's length; Discord plays the
    MP4 itself, above the embed (an animated WebP is shown in it)."""
    embed = result_embed(job, images, filename)
    embed.add_field(name="Clip", value=f"{len(video.frames)} frames, {video.seconds:.1f} s at {video.fps:g} fps")
    strength = job.spec.render.strength
    motion = next((name for name, value in render_params.MOTIONS.items() if value == strength), None)
    if motion is not None:
        embed.add_field(name="Motion", value=motion + (", loop" if job.spec.render.loop else ""))
    if job.spec.end is not None:
        embed.add_field(name="Ends on", value=shown_name(job.spec.end.name))
    if filename.endswith(".mp4"):
        embed.set_image(url=None)
    return embed


NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣")
UNFAMILIAR = (
    "This picture is far outside what my describer knows, so I won't guess a prompt for it: "
    "any prompt would be a confident wrong one. Describe it in your own words with /imagine."
)


def style_text(job: Job) -> str:
    """A job's --sref as the member can type it again: its codes, its pictures, its --sw; "" without one."""
    render, pictures = job.spec.render, job.spec.style_inputs
    parts = [f"`--sref {code}`" for code in render.style_codes]
    if job.spec.shown.profile is not None:  # a profile's pictures are many: their number, and the code
        parts.append(f"`--p {job.spec.shown.profile}` ({len(pictures)} picture{'s' if len(pictures) != 1 else ''})")
    else:
        parts += [shown_name(picture.name) for picture in pictures]
    if not parts:
        return ""
    return f"{', '.join(parts)}, --sw {render.style_weight}"


def described_embed(job: Job, filename: str) -> discord.Embed:
    """A /describe result: the prompts, numbered as the buttons under them, beside the picture."""
    lines = [f"{number} {_escape(prompt)}" for number, prompt in zip(NUMBERS, job.spec.described, strict=False)]
    if job.spec.unfamiliar:
        lines = [UNFAMILIAR]
    embed = discord.Embed(description="\n\n".join(lines)[:4000], colour=discord.Colour.blurple())
    if job.spec.inputs:
        embed.add_field(name="Picture", value=shown_name(job.spec.inputs[0].name))
    embed.add_field(name="Job", value=str(job.id))
    embed.set_thumbnail(url=f"attachment://{filename}")
    embed.set_footer(text=f"/show {job.id} brings this back at any time")
    return embed


def _escape(text: str) -> str:
    return discord.utils.escape_markdown(discord.utils.escape_mentions(text))


def style_embed(job: Job, filename: str) -> discord.Embed:
    """A /tune result: the style code, how to use it, and (as a thumbnail) the first picture it learnt from."""
    code = job.spec.style_code
    embed = discord.Embed(
        description=f"Your style code is `{code}`. Add `--lora {code}` to a prompt (`--lora {code}:0.6` for less).",
        colour=discord.Colour.blurple(),
    )
    embed.add_field(name="Pictures", value=str(len(job.spec.inputs)))
    embed.add_field(name="Model", value=job.model[:1000])
    embed.add_field(name="Job", value=str(job.id))
    embed.set_thumbnail(url=f"attachment://{filename}")
    embed.set_footer(text=f"/styles lists your codes; /show {job.id} brings this back")
    return embed


def lora_text(loras: Sequence[LoraWeight]) -> str:
    """`ink` 0.8, `mine` 1: the LoRAs a job drew with, as `--lora` takes them."""
    return ", ".join(f"`{lora.name}` {lora.weight:g}" for lora in loras)


def tile_embed(job: Job, image: ImageRow, filename: str) -> discord.Embed:
    embed = discord.Embed(colour=discord.Colour.blurple())
    embed.add_field(name="Seed", value=f"{image.seed} (`--seed {image.seed}` draws this as image 1)")
    embed.add_field(name="Size", value=f"{image.width}×{image.height}")
    embed.add_field(name="Model", value=job.model[:1000])
    embed.add_field(name="Job", value=f"{job.id}, image {image.idx}")
    _show_image(embed, filename)
    return embed
