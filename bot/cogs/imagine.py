"""/imagine and the buttons under its results: U1–U4, V1–V4, 🔄, Vary and Upscale.

Every button is a `DynamicItem` whose custom_id carries the job and tile (`dg:u:42:3`), and
everything else is read from SQLite, so a button works on a message of any age, across restarts.
"""

from __future__ import annotations

import asyncio
import io
import logging
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, messages, policy
from bot.client import DreamGrid
from bot.errors import UserError, reply_ephemeral
from bot.image_inputs import StoredInput, cdn_hosts_for, read_for_interaction, resolve_prompt_url, split_leading_urls
from bot.images import encode_grid
from bot.prompt import PromptError, parse_prompt
from bot.store import ImageRow, Job, NewJob
from engine import params as render_params

log = logging.getLogger(__name__)

STRENGTHS = {
    "strong": render_params.VARY_STRONG,
    "subtle": render_params.VARY_SUBTLE,
}
UPSCALE_STRENGTHS = {
    "subtle": render_params.UPSCALE_SUBTLE,
    "creative": render_params.UPSCALE_CREATIVE,
}
GRID_KINDS = ("imagine", "reroll", "variation")
IMAGE_PROMPT_PARAMS = ("input", "image_weight", "image_prompt_method")


def _bot(interaction: discord.Interaction) -> DreamGrid:
    return interaction.client  # type: ignore[return-value]


async def _job_or_error(bot: DreamGrid, job_id: int) -> Job:
    job = await bot.store.get_job(job_id)
    if job is None:
        raise UserError(f"Job {job_id} no longer exists.")
    return job


# -- building jobs from a click --------------------------------------------------------------


async def child_job(
    bot: DreamGrid,
    interaction: discord.Interaction,
    parent: Job,
    *,
    kind: str,
    index: int | None,
    strength: float | None = None,
    prompt: str | None = None,
) -> NewJob:
    """The job a click on `parent` asks for; `prompt` is a Remix edit of the parent's prompt."""
    params = dict(parent.params)
    text = parent.prompt
    model = parent.model
    if prompt is not None and prompt != parent.prompt:
        policy.check_remix(await bot.guild_configs.get(interaction.guild_id))
        # A remixed prompt is parsed like a new one, keeping the parent's size for V/Vary.
        profile = await bot.store.profile(interaction.user.id)
        try:
            parsed = parse_prompt(prompt, options=profile.options, models=bot.settings.installed_models, max_jobs=1)[0]
        except PromptError as exc:
            raise UserError(str(exc)) from None
        model = parsed.model or parent.model
        fresh = jobs.imagine_params(parsed, bot=bot, model=model, defaults=profile.settings)
        if kind != "reroll":
            fresh.update(width=params["width"], height=params["height"], aspect=params.get("aspect"))
        elif "input" in params:  # a remixed reroll of an image prompt keeps its picture
            picture = StoredInput.from_record(params["input"])
            fresh = jobs.image_prompt_params(parsed, picture, bot=bot, model=model, defaults=profile.settings)
        params, text = fresh, parsed.raw
    params.pop("strength", None)
    if kind != "reroll":  # a variation or upscale works from the parent's tile, not its image prompt
        for key in IMAGE_PROMPT_PARAMS:
            params.pop(key, None)
    if strength is not None:
        params["steps"] = render_params.img2img_steps(params["steps"], strength)
    if kind == "variation":
        params["strength"] = strength
        seeds = jobs.seeds_for(None)
    elif kind == "upscale":
        params["strength"] = strength
        seeds = jobs.seeds_for(None, count=1)
    else:  # reroll
        seeds = jobs.seeds_for(None)
    return jobs.new_job(
        interaction,
        kind=kind,
        prompt=text,
        params=params,
        seeds=seeds,
        model=model,
        parent_id=parent.id,
        parent_index=index,
    )


async def start_child(
    interaction: discord.Interaction, parent_id: int, *, kind: str, index: int | None, strength: float | None = None
) -> None:
    """What V, 🔄, Vary and Upscale do: queue a job, or first open the Remix modal."""
    bot = _bot(interaction)
    config = await policy.gate(bot, interaction)
    parent = await _job_or_error(bot, parent_id)
    if parent.status != "done" and kind != "reroll":
        raise UserError(f"Job {parent.id} has no finished images to work from.")
    profile = await bot.store.profile(interaction.user.id)
    if profile.settings.get("remix") and config["remix_allowed"] and kind != "upscale":
        await interaction.response.send_modal(RemixModal(parent=parent, kind=kind, index=index, strength=strength))
        return
    job = await child_job(bot, interaction, parent, kind=kind, index=index, strength=strength)
    await jobs.submit(bot, interaction, [job])


async def stored_or_redraw(
    interaction: discord.Interaction, job: Job, *, then: str
) -> tuple[list[ImageRow], list[Path]] | None:
    """The job's stored tiles and their files; if the files are gone, draw the job again.

    The redraw is the recorded request with the same seeds, so it gives the same pixels; the
    member is told, ephemerally, what to do `then` on the new grid. Returns None in that case.
    """
    bot = _bot(interaction)
    rows = await bot.store.get_images(job.id)
    paths = [bot.settings.data_dir / row.path for row in rows]
    if rows and all(path.exists() for path in paths):
        return rows, paths
    await jobs.submit(bot, interaction, [_redraw(interaction, job)])
    await interaction.followup.send(
        f"The images of job {job.id} were no longer stored, so it is being drawn again with the same seeds; {then}",
        ephemeral=True,
    )
    return None


async def guarded(interaction: discord.Interaction, coro: Any) -> None:
    """Run a button's work; a UserError becomes an ephemeral reply, as the command tree does."""
    try:
        await coro
    except UserError as exc:
        await reply_ephemeral(interaction, str(exc))
    except discord.HTTPException:
        raise
    except Exception:
        log.exception("button %s failed", interaction.data.get("custom_id") if interaction.data else "?")
        await reply_ephemeral(interaction, "Something went wrong on our side. It has been logged; please try again.")


class RemixModal(discord.ui.Modal):
    """Remix mode: edit the prompt before a variation or reroll runs."""

    def __init__(self, *, parent: Job, kind: str, index: int | None, strength: float | None) -> None:
        label = "Reroll" if kind == "reroll" else f"Remix image #{index}"
        super().__init__(title=f"{label} (job {parent.id})"[:45], timeout=600)
        self.parent, self.kind, self.index, self.strength = parent, kind, index, strength
        self.prompt = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=parent.prompt[:1500],
            max_length=1500,
            custom_id="prompt",
        )
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._start(interaction))

    async def _start(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        job = await child_job(
            bot,
            interaction,
            self.parent,
            kind=self.kind,
            index=self.index,
            strength=self.strength,
            prompt=self.prompt.value,
        )
        await jobs.submit(bot, interaction, [job])


# -- the buttons ------------------------------------------------------------------------------


class UpscaleButton(discord.ui.DynamicItem[discord.ui.Button], template=r"dg:u:(?P<job>\d+):(?P<n>[1-4])"):
    """U1–U4: post one tile on its own, with Vary and Upscale buttons. No render needed."""

    def __init__(self, job_id: int, index: int, *, used: bool = False) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"U{index}",
                style=discord.ButtonStyle.success if used else discord.ButtonStyle.secondary,
                custom_id=f"dg:u:{job_id}:{index}",
                row=0,
            )
        )
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /):
        return cls(int(match["job"]), int(match["n"]), used=item.style is discord.ButtonStyle.success)

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._post_tile(interaction))

    async def _post_tile(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        job = await _job_or_error(bot, self.job_id)
        stored = await stored_or_redraw(interaction, job, then=f"press U{self.index} on the new grid.")
        if stored is None:
            return
        row, path = next((r, p) for r, p in zip(*stored, strict=True) if r.idx == self.index)
        data, filename = await asyncio.to_thread(
            encode_grid, [path], f"dreamgrid-{job.id}-{self.index}", interaction.filesize_limit
        )
        filename = messages.spoiler_name(job, [row], filename)
        # The clicked button turns green, as on Midjourney; the tile follows as a new message.
        view = result_view(job, used={*_used_indexes(interaction.message), self.index})
        await interaction.response.edit_message(view=view)
        await interaction.followup.send(
            content=messages.tile(job, self.index),
            embed=messages.tile_embed(job, row, filename),
            file=discord.File(io.BytesIO(data), filename=filename),
            view=tile_view(job.id, self.index),
        )


class VariationButton(discord.ui.DynamicItem[discord.ui.Button], template=r"dg:v:(?P<job>\d+):(?P<n>[1-4])"):
    """V1–V4: a new grid of variations of one tile."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label=f"V{index}", custom_id=f"dg:v:{job_id}:{index}", row=1))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /):
        return cls(int(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        profile = await _bot(interaction).store.profile(interaction.user.id)
        strength = STRENGTHS[profile.settings.get("variation", "strong")]
        await guarded(
            interaction, start_child(interaction, self.job_id, kind="variation", index=self.index, strength=strength)
        )


class RerollButton(discord.ui.DynamicItem[discord.ui.Button], template=r"dg:reroll:(?P<job>\d+)"):
    """🔄: the same prompt with new seeds."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(emoji="🔄", custom_id=f"dg:reroll:{job_id}", row=0))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /):
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, start_child(interaction, self.job_id, kind="reroll", index=None))


class TileActionButton(
    discord.ui.DynamicItem[discord.ui.Button],
    template=r"dg:(?P<action>vary|up):(?P<how>strong|subtle|creative):(?P<job>\d+):(?P<n>[1-4])",
):
    """The buttons under a single tile: Vary (Strong|Subtle) and Upscale (Subtle|Creative)."""

    # custom_id action -> (label, emoji, job kind, strengths by how)
    ACTIONS: dict[str, tuple[str, str, str, dict[str, float]]] = {
        "vary": ("Vary", "🪄", "variation", STRENGTHS),
        "up": ("Upscale", "🔍", "upscale", UPSCALE_STRENGTHS),
    }

    def __init__(self, action: str, how: str, job_id: int, index: int) -> None:
        label, emoji, _, _ = self.ACTIONS[action]
        super().__init__(
            discord.ui.Button(
                label=f"{label} ({how.title()})", emoji=emoji, custom_id=f"dg:{action}:{how}:{job_id}:{index}"
            )
        )
        self.action, self.how, self.job_id, self.index = action, how, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /):
        return cls(match["action"], match["how"], int(match["job"]), int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        _, _, kind, strengths = self.ACTIONS[self.action]
        if self.how not in strengths:  # e.g. a hand-made dg:vary:creative:…
            await reply_ephemeral(interaction, "That button is not one of ours.")
            return
        await guarded(
            interaction,
            start_child(interaction, self.job_id, kind=kind, index=self.index, strength=strengths[self.how]),
        )


class SendToDMButton(discord.ui.DynamicItem[discord.ui.Button], template=r"dg:dm:(?P<job>\d+)"):
    """✉️: send the result, with its seeds and job id, to whoever pressed it."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(emoji="✉️", custom_id=f"dg:dm:{job_id}", row=1))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Button, match: Any, /):
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await guarded(interaction, self._send(interaction))

    async def _send(self, interaction: discord.Interaction) -> None:
        bot = _bot(interaction)
        job = await _job_or_error(bot, self.job_id)
        stored = await stored_or_redraw(interaction, job, then="press ✉️ on the new grid.")
        if stored is None:
            return
        rows, paths = stored
        await interaction.response.defer(ephemeral=True, thinking=True)
        data, filename = await asyncio.to_thread(encode_grid, paths, f"dreamgrid-{job.id}")
        filename = messages.spoiler_name(job, rows, filename)
        try:
            await interaction.user.send(
                content=f"Job {job.id}: {job.prompt[:1800]}",
                embed=messages.result_embed(job, rows, filename),
                file=discord.File(io.BytesIO(data), filename=filename),
            )
        except discord.Forbidden:
            raise UserError("I can't send you a DM: allow direct messages from server members and try again.") from None
        await interaction.followup.send("Sent to your DMs. ✉️", ephemeral=True)


BUTTONS = (UpscaleButton, VariationButton, RerollButton, TileActionButton, SendToDMButton)


def result_view(job: Job, used: set[int] | frozenset[int] = frozenset()) -> discord.ui.View | None:
    """Row 1 `U1 U2 U3 U4 🔄`, row 2 `V1 V2 V3 V4` under a grid; nothing under an upscale."""
    if job.kind not in GRID_KINDS or job.status != "done":
        return None
    view = discord.ui.View(timeout=None)
    for n in range(1, 5):
        view.add_item(UpscaleButton(job.id, n, used=n in used))
    view.add_item(RerollButton(job.id))
    for n in range(1, 5):
        view.add_item(VariationButton(job.id, n))
    view.add_item(SendToDMButton(job.id))
    return view


def tile_view(job_id: int, index: int) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(TileActionButton("vary", "strong", job_id, index))
    view.add_item(TileActionButton("vary", "subtle", job_id, index))
    view.add_item(TileActionButton("up", "subtle", job_id, index))
    view.add_item(TileActionButton("up", "creative", job_id, index))
    return view


def _used_indexes(message: discord.Message | None) -> set[int]:
    used = set()
    for row in message.components if message else []:
        for child in getattr(row, "children", []):
            custom_id = getattr(child, "custom_id", None) or ""
            if custom_id.startswith("dg:u:") and getattr(child, "style", None) is discord.ButtonStyle.success:
                used.add(int(custom_id.rsplit(":", 1)[1]))
    return used


def _redraw(interaction: discord.Interaction, job: Job) -> NewJob:
    """The same request again: same seeds and batch, so the same pixels."""
    return jobs.new_job(
        interaction,
        kind=job.kind,
        prompt=job.prompt,
        params=job.params,
        seeds=job.seeds,
        model=job.model,
        parent_id=job.parent_id,
        parent_index=job.parent_index,
    )


# -- the command ------------------------------------------------------------------------------


class Imagine(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Draw four images from a prompt")
    @app_commands.describe(
        prompt="What to draw, e.g. a lighthouse at dusk --ar 3:2 --seed 7 --no text",
        image="A picture to steer the result (an image prompt; --iw 0–3 sets how strongly)",
    )
    async def imagine(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        image: discord.Attachment | None = None,
    ) -> None:
        bot = self.bot
        config = await policy.gate(bot, interaction)  # this channel, this member
        profile = await bot.store.profile(interaction.user.id)
        # Midjourney's image prompts: Discord attachment URLs may lead the prompt.
        urls, text = split_leading_urls(prompt)
        pictures = [image] if image is not None else []
        for url in urls:
            cdn_hosts = cdn_hosts_for(discord.http.Route.BASE)  # where this client talks to Discord
            pictures.append(await resolve_prompt_url(interaction, url, cdn_hosts=cdn_hosts))
        if len(pictures) > 1:
            raise UserError("One picture per prompt: the `image` option or one image URL at the start, not both.")
        try:
            parsed_prompts = parse_prompt(
                text, suffix=profile.suffix, options=profile.options, models=bot.settings.installed_models
            )
        except PromptError as exc:
            raise UserError(str(exc)) from None
        if not pictures and any(p.image_weight is not None for p in parsed_prompts):
            raise UserError("`--iw` sets how strongly a picture steers the result: add one with the `image` option.")
        policy.check_repeat(config, parsed_prompts)
        defaults = {"aspect": config["default_aspect"], **profile.settings}
        models = [parsed.model or config.default_model for parsed in parsed_prompts]
        for model in models:
            policy.check_model(config, model)
        picture = None
        if pictures:
            native = max(bot.engine.native_size(model) for model in set(models))
            picture = await read_for_interaction(
                interaction, pictures[0], pixel_budget=native * native, data_dir=bot.settings.data_dir
            )
        new_jobs = []
        for parsed, model in zip(parsed_prompts, models, strict=True):
            if picture is None:
                params = jobs.imagine_params(parsed, bot=bot, model=model, defaults=defaults)
            else:
                params = jobs.image_prompt_params(parsed, picture, bot=bot, model=model, defaults=defaults)
            new_jobs.append(
                jobs.new_job(
                    interaction,
                    kind="imagine",
                    prompt=parsed.raw,
                    params=params,
                    seeds=jobs.seeds_for(parsed.seed),
                    model=model,
                )
            )
        await jobs.submit(bot, interaction, new_jobs)


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(*BUTTONS)
    bot.result_view = result_view
    await bot.add_cog(Imagine(bot))
