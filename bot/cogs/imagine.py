"""/imagine and the buttons under its results: U1–U4, V1–V4, 🔄, and those under one tile.

Every button is a `DynamicItem` whose custom_id carries the job and tile (`dg:u:42:3`), and
everything else is read from SQLite, so a button works on a message of any age, across restarts.
Which buttons a result carries, and which kinds a tile offers, come from `bot.kinds`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import logging
import re
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, messages, policy, spec_builders, styles
from bot.client import DreamGrid
from bot.errors import UserError, reply_ephemeral
from bot.guild_config import GuildConfig
from bot.image_files import encode_grid
from bot.kinds import JobKind, ResultButtons
from bot.member_pictures import cdn_hosts_for, read_for_interaction, resolve_prompt_url, split_leading_urls
from bot.prompt import MAX_JOBS
from bot.rows import Job, NewJob
from bot.spec import InputImage
from bot.ui import GuardedItem, JobViews, start_child
from engine import params as render_params

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]


# -- the buttons ------------------------------------------------------------------------------


class UpscaleButton(GuardedItem[discord.ui.Button], template=r"dg:u:(?P<job>\d+):(?P<n>[1-4])"):
    """U1–U4: post one tile on its own, with the edit buttons under it. No render needed."""

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
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        assert isinstance(item, discord.ui.Button)  # the template matches this class's buttons only
        return cls(int(match["job"]), int(match["n"]), used=item.style is discord.ButtonStyle.success)

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        job = await jobs.job_or_error(bot, interaction, self.job_id)
        stored = await jobs.stored_or_redraw(bot, interaction, job, then=f"press U{self.index} on the new grid.")
        if stored is None:
            return
        row, path = next((r, p) for r, p in zip(*stored, strict=True) if r.idx == self.index)
        data, filename = await asyncio.to_thread(
            encode_grid, [path], f"dreamgrid-{job.id}-{self.index}", interaction.filesize_limit
        )
        filename = messages.spoiler_name(job, [row], filename)
        # The clicked button turns green, as on Midjourney; the tile follows as a new message.
        view = bot.views.result(job, frozenset({*_used_indexes(interaction.message), self.index}))
        await interaction.response.edit_message(view=view)
        await interaction.followup.send(
            content=messages.tile(job, self.index),
            embed=messages.tile_embed(job, row, filename),
            file=discord.File(io.BytesIO(data), filename=filename),
            view=bot.views.picture(job, self.index, row.width, row.height) or discord.utils.MISSING,  # None fails
        )


class VariationButton(GuardedItem[discord.ui.Button], template=r"dg:v:(?P<job>\d+):(?P<n>[1-4])"):
    """V1–V4: a new grid of variations of one tile, as strong as the member's /settings say."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label=f"V{index}", custom_id=f"dg:v:{job_id}:{index}", row=1))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        profile = await interaction.client.store.profile(interaction.user.id)
        kind = kinds.VARIATION
        strength = kind.strengths.get(profile.settings.get("variation", ""), kind.default_strength)
        await start_child(interaction, self.job_id, kind=kind, index=self.index, strength=strength)


class EnhanceButton(GuardedItem[discord.ui.Button], template=r"dg:enh:(?P<job>\d+):(?P<n>[1-4])"):
    """E1–E4 under a --draft grid: that tile redrawn at full quality (the full steps and size)."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(label=f"E{index}", emoji="✨", custom_id=f"dg:enh:{job_id}:{index}", row=2))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        kind = kinds.ENHANCE
        await start_child(interaction, self.job_id, kind=kind, index=self.index, strength=kind.default_strength)


class RerollButton(GuardedItem[discord.ui.Button], template=r"dg:reroll:(?P<job>\d+)"):
    """🔄: the same prompt with new seeds."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(emoji="🔄", custom_id=f"dg:reroll:{job_id}", row=0))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]))

    async def respond(self, interaction: Interaction) -> None:
        parent = await jobs.job_or_error(interaction.client, interaction, self.job_id)
        kind = kinds.get(kinds.get(parent.kind).rerolls_as)  # an image prompt rerolls with its picture
        await start_child(interaction, self.job_id, kind=kind, index=None)


def _tile_template() -> str:
    """`dg:{word}:{preset}:{job}:{n}` for every kind that offers a button under a tile."""
    offered = [k for k in kinds.KINDS.values() if k.tile_button is not None]
    words = "|".join(re.escape(button.word) for button in (k.tile_button for k in offered) if button is not None)
    presets = "|".join(sorted({re.escape(name) for k in offered for name in k.strengths}))
    return rf"dg:(?P<word>{words}):(?P<preset>{presets}):(?P<job>\d+):(?P<n>[1-4])"


class TileActionButton(GuardedItem[discord.ui.Button], template=_tile_template()):
    """The buttons under a single tile, one per kind and strength: Vary (Strong|Subtle), Upscale (Subtle|Creative)."""

    def __init__(self, kind: JobKind, preset: str, job_id: int, index: int) -> None:
        button = kind.tile_button
        if button is None:
            raise ValueError(f"job kind {kind.name!r} has no button under a tile")
        super().__init__(
            discord.ui.Button(
                # "Vary (Strong)"; a kind with one strength is just its name.
                label=f"{button.label} ({preset.title()}{button.preset_suffix})"
                if len(kind.strengths) > 1
                else button.label,
                emoji=button.emoji,
                custom_id=f"dg:{button.word}:{preset}:{job_id}:{index}",
            )
        )
        self.kind, self.preset, self.job_id, self.index = kind, preset, job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        kind = kinds.by_tile_word(match["word"])
        assert kind is not None  # the template only matches registered words
        return cls(kind, match["preset"], int(match["job"]), int(match["n"]))

    async def check(self, interaction: Interaction) -> None:
        if self.preset not in self.kind.strengths:  # e.g. a hand-made dg:vary:creative:…
            raise UserError("That button is not one of ours.")

    async def respond(self, interaction: Interaction) -> None:
        strength = self.kind.strengths[self.preset]
        await start_child(interaction, self.job_id, kind=self.kind, index=self.index, strength=strength)


class SendToDMButton(GuardedItem[discord.ui.Button], template=r"dg:dm:(?P<job>\d+)(?::(?P<n>[1-4]))?"):
    """✉️: send the result (or, under one image, that image), with seeds and job id, to whoever pressed it."""

    def __init__(self, job_id: int, index: int | None = None, *, row: int = 1) -> None:
        custom_id = f"dg:dm:{job_id}" if index is None else f"dg:dm:{job_id}:{index}"
        super().__init__(discord.ui.Button(emoji="✉️", custom_id=custom_id, row=row))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]) if match["n"] else None)

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        job = await jobs.job_or_error(bot, interaction, self.job_id)
        stored = await jobs.stored_or_redraw(bot, interaction, job, then="press ✉️ on the new grid.")
        if stored is None:
            return
        rows, paths = stored
        if self.index is not None:
            picked = [(r, p) for r, p in zip(rows, paths, strict=True) if r.idx == self.index]
            rows, paths = [r for r, _ in picked], [p for _, p in picked]
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


BUTTONS = (UpscaleButton, VariationButton, EnhanceButton, RerollButton, TileActionButton, SendToDMButton)


def grid_view(job: Job, used: frozenset[int] = frozenset()) -> discord.ui.View:
    """Row 1 `U1 U2 U3 U4 🔄`, row 2 `V1 V2 V3 V4 ✉️`; under a --draft grid, row 3 `E1 E2 E3 E4` (Enhance)."""
    view = discord.ui.View(timeout=None)
    for n in range(1, 5):
        view.add_item(UpscaleButton(job.id, n, used=n in used))
    view.add_item(RerollButton(job.id))
    for n in range(1, 5):
        view.add_item(VariationButton(job.id, n))
    view.add_item(SendToDMButton(job.id))
    if job.spec.shown.draft:
        for n in range(1, 5):
            view.add_item(EnhanceButton(job.id, n))
    return view


def _used_indexes(message: discord.Message | None) -> set[int]:
    used = set()
    for row in message.components if message else []:
        for child in getattr(row, "children", []):
            custom_id = getattr(child, "custom_id", None) or ""
            if custom_id.startswith("dg:u:") and getattr(child, "style", None) is discord.ButtonStyle.success:
                used.add(int(custom_id.rsplit(":", 1)[1]))
    return used


# -- the command ------------------------------------------------------------------------------

CONFIRM_ABOVE_JOBS = 5  # Midjourney asks before queuing more jobs than this from one prompt


async def imagine_jobs(
    interaction: Interaction, config: GuildConfig, prompt: str, image: discord.Attachment | None = None
) -> list[NewJob]:
    """The jobs a prompt asks for: one per {choice} and --repeat, with the member's defaults.

    A picture (the `image` option, or a Discord attachment link leading the prompt) makes them
    image prompts, as on Midjourney.
    """
    bot = interaction.client
    profile = await bot.store.profile(interaction.user.id)
    urls, text = split_leading_urls(prompt)
    attached = [image] if image is not None else []
    cdn_hosts = cdn_hosts_for(discord.http.Route.BASE)  # where this client talks to Discord
    pictures = {a.id: a for a in attached}  # a link to the `image` upload is the same picture
    for url in urls:
        found = await resolve_prompt_url(interaction, url, attached=attached, cdn_hosts=cdn_hosts)
        pictures[found.id] = found
    if len(pictures) > 1:
        raise UserError("One picture per prompt: the `image` option or one image link at the start, not both.")
    parsed_prompts = jobs.parse_members_prompt(bot, config, profile, text, max_jobs=MAX_JOBS)
    if not pictures and any(p.image_weight is not None for p in parsed_prompts):
        raise UserError("`--iw` sets how strongly a picture steers the result: add one with the `image` option.")
    policy.check_repeat(config, parsed_prompts)
    parsed_prompts = await styles.prepare(bot, interaction, config, parsed_prompts)  # random codes, --p frozen
    if image is not None and len(parsed_prompts) > CONFIRM_ABOVE_JOBS:
        # The Yes button rebuilds the jobs from the prompt alone; an uploaded option cannot ride along.
        raise UserError(
            f"With the `image` option a prompt makes at most {CONFIRM_ABOVE_JOBS} jobs; "
            f"this one makes {len(parsed_prompts)}."
        )
    defaults = jobs.prompt_defaults(config, profile)
    chosen = profile.settings.get("model")  # /settings; a model the server no longer allows is skipped
    default_model = chosen if chosen in config.allowed_models else config.default_model
    models = [parsed.model or default_model for parsed in parsed_prompts]
    picture = None
    if pictures:
        for model in models:  # refuse a model the server does not allow before reading the picture
            policy.check_model(config, model)
        native = max(bot.engine.native_size(model) for model in set(models))
        (attachment,) = pictures.values()
        picture = await read_for_interaction(
            interaction, attachment, reader=bot.pictures, pixel_budget=native * native, data_dir=bot.settings.data_dir
        )
    if picture is not None and any(parsed.object_ref for parsed in parsed_prompts):
        raise UserError("Use `--oref` or an image prompt, not both: the subject's picture goes after `--oref`.")
    subjects: dict[str, InputImage] = {}  # each --oref picture, read once
    new_jobs = []
    style_pictures: dict[tuple[str, ...], tuple[InputImage, ...]] = {}  # each prompt's --sref pictures, read once
    for parsed, model in zip(parsed_prompts, models, strict=True):
        picture_refs = styles.picture_references(parsed)
        if picture_refs not in style_pictures:
            style_pictures[picture_refs] = await styles.style_pictures(bot, interaction, parsed, attached=attached)
        facts: dict[str, Any] = {"settings": bot.settings, "engine": bot.engine, "model": model, "defaults": defaults}
        kind = kinds.IMAGINE if picture is None else kinds.IMAGE_PROMPT
        if parsed.object_ref is not None:
            route = styles.object_route(bot.engine, model, parsed)  # refused before any picture is read
            if parsed.object_ref not in subjects:
                subjects[parsed.object_ref] = await styles.object_picture(bot, interaction, parsed.object_ref, attached)
            subject = subjects[parsed.object_ref]
            if route is styles.ObjectRoute.IP_ADAPTER:
                weight = render_params.OBJECT_WEIGHT_DEFAULT if parsed.object_weight is None else parsed.object_weight
                steered = dataclasses.replace(parsed, image_weight=render_params.object_image_weight(weight))
                kind, spec = kinds.IMAGE_PROMPT, spec_builders.image_prompt_spec(steered, subject, **facts)
            else:
                kind, spec = kinds.OBJECT_REFERENCE, spec_builders.object_reference_spec(parsed, subject, **facts)
        elif picture is None:
            spec = spec_builders.imagine_spec(parsed, **facts)
        else:
            spec = spec_builders.image_prompt_spec(parsed, picture, **facts)
        spec = dataclasses.replace(spec, style_inputs=style_pictures[picture_refs])
        new_jobs.append(jobs.prompt_job(interaction, kind, parsed, spec, model=model, profile=profile))
    return new_jobs


def confirmation(prompt: str, count: int) -> dict[str, Any]:  # Any: reply_ephemeral's content, embed and view
    """The ephemeral question before a large batch; the prompt rides along in the embed for Yes."""
    view = discord.ui.View(timeout=None)
    view.add_item(ConfirmButton(yes=True))
    view.add_item(ConfirmButton(yes=False))
    return {
        "content": f"This prompt makes **{count} jobs** ({count * kinds.IMAGINE.image_count} images). Queue them all?",
        "embed": discord.Embed(description=prompt, colour=discord.Colour.blurple()),
        "view": view,
    }


class ConfirmButton(GuardedItem[discord.ui.Button], template=r"dg:confirm:(?P<answer>yes|no)"):
    """Yes / No under the question a prompt of more than CONFIRM_ABOVE_JOBS jobs asks first.

    Nothing is queued until Yes. The prompt is read back from the question's own embed, so
    the buttons work across restarts; Yes parses it again and applies every rule then.
    """

    def __init__(self, *, yes: bool) -> None:
        super().__init__(
            discord.ui.Button(
                label="Yes" if yes else "No",
                style=discord.ButtonStyle.success if yes else discord.ButtonStyle.secondary,
                custom_id=f"dg:confirm:{'yes' if yes else 'no'}",
            )
        )
        self.yes = yes

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(yes=match["answer"] == "yes")

    async def respond(self, interaction: Interaction) -> None:
        message = interaction.message
        prompt = message.embeds[0].description if message and message.embeds else None
        if not self.yes or not prompt:
            await interaction.response.edit_message(content="Nothing was queued.", embed=None, view=None)
            return
        await interaction.response.edit_message(content="Queuing them…", view=None)

        async def build(config: GuildConfig) -> list[NewJob]:
            return await imagine_jobs(interaction, config, prompt)

        try:
            async with interaction.client.admission:
                accepted = await jobs.submit(interaction.client, interaction, build)
        except UserError as exc:
            await interaction.edit_original_response(content=str(exc), embed=None)
            return
        await interaction.edit_original_response(content=f"Queued {len(accepted)} jobs.", embed=None)


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
        interaction: Interaction,
        prompt: app_commands.Range[str, 1, 1500],
        image: discord.Attachment | None = None,
    ) -> None:
        async def build(config: GuildConfig) -> list[NewJob]:
            new_jobs = await imagine_jobs(interaction, config, prompt, image)
            if len(new_jobs) > CONFIRM_ABOVE_JOBS:
                # Refuse now what Yes could not queue, then ask before queuing the rest.
                await policy.check_waiting_room(self.bot, interaction, config, len(new_jobs))
                await reply_ephemeral(interaction, **confirmation(prompt, len(new_jobs)))
                return []
            return new_jobs

        if not await jobs.acknowledge(interaction):  # first, before any database work
            return
        async with self.bot.admission:
            await jobs.submit(self.bot, interaction, build)


def install_views(views: JobViews) -> None:
    """The grid's buttons, each kind's tile button under a picture, and ✉️ under a picture."""
    views.results[ResultButtons.GRID] = grid_view
    views.tile_action = TileActionButton
    views.picture_extras.append(lambda job, index: SendToDMButton(job.id, index, row=2))


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(*BUTTONS, ConfirmButton)
    install_views(bot.views)
    await bot.add_cog(Imagine(bot))
