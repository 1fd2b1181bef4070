"""Members' own images: /upscale, /variation, /edit and /animate, the Apps menu's Upscale 2x and
Vary, and Extend under a clip.

The source is either one image of an earlier job (`job_id` + `number`, as U1–U4 pick it, or the
target of an Apps action on one of our single-image posts) or a member's own picture (an `image`
upload, or the target of an Apps action on anyone's message with a picture). A job's image makes
the same kind a tile button makes; a picture makes that kind's counterpart for pictures
(`kinds.FOR_PICTURES`), whose source is our stored copy (`bot.member_pictures`). Either way the
result shows progress, ends with the same embed and buttons, and is found again with /show and
recovered after a crash.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, policy, spec_builders
from bot.client import DreamGrid
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.kinds import JobKind, ResultButtons
from bot.member_pictures import image_attachments, read_for_interaction
from bot.prompt import ParsedPrompt
from bot.rows import Job, NewJob
from bot.ui import GuardedItem, JobViews, start_child
from engine.params import MOTIONS

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]

_TILE_FIELD = re.compile(r"^(?P<job>\d+), image (?P<n>[1-4])$")  # messages.tile_embed's "Job" field
_SHOW_FOOTER = re.compile(r"^/show (?P<job>\d+) ")  # messages.result_embed's footer


Finish = Callable[[NewJob], Awaitable[NewJob]]


def _strength(kind: JobKind, mode: str) -> float:
    """The strength a command's `mode` names (its choices come from the kind's strengths)."""
    if mode not in kind.strengths:
        raise UserError(f"`mode` is one of {', '.join(preset.title() for preset in kind.strengths)}.")
    return kind.strengths[mode]


def _modes(kind: JobKind) -> list[app_commands.Choice[str]]:
    return [app_commands.Choice(name=preset.title(), value=preset) for preset in kind.strengths]


async def visible_job(bot: DreamGrid, interaction: Interaction, job_id: int, number: int) -> Job:
    """The finished job whose image `number` the member names, if they may see it."""
    if not 1 <= number <= 4:
        raise UserError(f"`number` is which image of the job, 1–4 (as on U1–U4), not {number}.")
    job = await bot.store.get_job(job_id)
    if job is None or not policy.can_see(interaction, job):
        raise UserError(f"You have no job {job_id}, and none was posted where you can see it.")
    if job.status != "done":
        raise UserError(f"Job {job_id} has no finished images to work from.")
    if number > len(job.seeds):
        raise UserError(f"Job {job_id} has only one image: use `number: 1`.")
    return job


async def picture_job(
    bot: DreamGrid,
    interaction: Interaction,
    config: GuildConfig,
    attachment: discord.Attachment,
    *,
    kind: JobKind,
    strength: float | None,
    prompt: str = "",
) -> NewJob:
    """A job of `kind` (one drawing from pictures) on a member's picture, stored as our own copy."""
    profile = await bot.store.profile(interaction.user.id)
    parsed = ParsedPrompt(text="", raw="")
    if prompt.strip():
        parsed = jobs.parse_members_prompt(bot, config, profile, prompt, with_suffix=False)[0]
    model = parsed.model or config.default_model
    native = bot.engine.native_size(model)
    picture = await read_for_interaction(
        interaction, attachment, reader=bot.pictures, pixel_budget=native * native, data_dir=bot.settings.data_dir
    )
    facts: dict[str, Any] = {
        "settings": bot.settings,
        "engine": bot.engine,
        "model": model,
        "defaults": jobs.prompt_defaults(config, profile),
    }
    if kind.edits_by_instruction:  # the picture is the reference, the prompt what to change
        spec = spec_builders.instruction_spec(parsed, picture, **facts)
    else:
        assert strength is not None  # a picture's other kinds redraw it at a named strength
        spec = spec_builders.picture_spec(parsed, picture, strength=strength, **facts)
    return jobs.prompt_job(interaction, kind, parsed, spec, model=model, profile=profile)


async def submit_picture(
    bot: DreamGrid,
    interaction: Interaction,
    attachment: discord.Attachment,
    *,
    kind: JobKind,
    strength: float | None,
    prompt: str = "",
) -> None:
    """Queue `kind`'s counterpart for pictures on `attachment`."""
    picture_kind = kinds.FOR_PICTURES[kind.name]

    async def build(config: GuildConfig) -> list[NewJob]:
        job = await picture_job(
            bot, interaction, config, attachment, kind=picture_kind, strength=strength, prompt=prompt
        )
        return [job]

    await jobs.submit(bot, interaction, build)


def job_image_on(message: discord.Message, bot_user: discord.abc.User | None) -> tuple[int, int | None] | None:
    """(job id, image number) when `message` is one of our result or tile posts; number None for a grid."""
    if bot_user is None or message.author.id != bot_user.id:
        return None
    for embed in message.embeds:
        for field in embed.fields:
            if field.name == "Job" and (match := _TILE_FIELD.match(field.value or "")):
                return int(match["job"]), int(match["n"])
        if embed.footer and (match := _SHOW_FOOTER.match(embed.footer.text or "")):
            return int(match["job"]), None
    return None


class Images(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot
        self.menus = [
            app_commands.ContextMenu(name="Upscale 2x", callback=self.upscale_message),
            app_commands.ContextMenu(name="Vary", callback=self.vary_message),
        ]

    async def cog_load(self) -> None:
        for menu in self.menus:
            self.bot.tree.add_command(menu)

    async def cog_unload(self) -> None:
        for menu in self.menus:
            self.bot.tree.remove_command(menu.name, type=menu.type)

    # -- the slash commands ------------------------------------------------------------------

    @app_commands.command(description="Upscale an image 2x: one of a job's, or your own picture")
    @app_commands.describe(
        job_id="The job number from a result's embed",
        number="Which of the job's images, 1–4 (as U1–U4)",
        image="Or: your own picture (PNG, JPEG, WebP or GIF)",
        mode="Subtle keeps the picture; Creative redraws more detail",
    )
    @app_commands.choices(mode=_modes(kinds.UPSCALE))
    async def upscale(
        self,
        interaction: Interaction,
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        mode: str = next(iter(kinds.UPSCALE.strengths)),
    ) -> None:
        strength = _strength(kinds.UPSCALE, mode)
        await self._start(interaction, kinds.UPSCALE, strength, job_id=job_id, number=number, image=image)

    @app_commands.command(description="Four variations of an image: one of a job's, or your own picture")
    @app_commands.describe(
        job_id="The job number from a result's embed",
        number="Which of the job's images, 1–4 (as V1–V4)",
        image="Or: your own picture (PNG, JPEG, WebP or GIF)",
        mode="Strong changes more; Subtle stays close",
        prompt="A new prompt (default: the job's prompt; none for your own picture)",
    )
    @app_commands.choices(mode=_modes(kinds.VARIATION))
    async def variation(
        self,
        interaction: Interaction,
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        mode: str = next(iter(kinds.VARIATION.strengths)),
        prompt: app_commands.Range[str, 1, 1500] | None = None,
    ) -> None:
        strength = _strength(kinds.VARIATION, mode)
        await self._start(
            interaction, kinds.VARIATION, strength, job_id=job_id, number=number, image=image, prompt=prompt
        )

    async def _start(
        self,
        interaction: Interaction,
        kind: JobKind,
        strength: float | None,
        *,
        job_id: int | None,
        number: int | None,
        image: discord.Attachment | None,
        prompt: str | None = None,
        finish: Finish | None = None,
    ) -> None:
        """`kind` on a job's image (`job_id`, `number`) or on the member's own picture (`image`);
        `finish` completes the job's spec once it is built (Animate's loop and end picture)."""
        bot = self.bot
        if image is not None and (job_id is not None or number is not None):
            raise UserError("Give either `job_id` and `number`, or an `image`: not both.")
        if image is None and (job_id is None or number is None):
            raise UserError("Say which image: `job_id` and `number` (1–4), or upload one with `image`.")

        async def build(config: GuildConfig) -> list[NewJob]:
            if image is not None:
                picture_kind = kinds.FOR_PICTURES[kind.name]
                child = await picture_job(
                    bot, interaction, config, image, kind=picture_kind, strength=strength, prompt=prompt or ""
                )
            else:
                assert job_id is not None and number is not None
                parent = await visible_job(bot, interaction, job_id, number)
                child = await jobs.child_job(
                    bot, interaction, config, parent, kind=kind, index=number, strength=strength, prompt=prompt
                )
            return [await finish(child) if finish is not None else child]

        await jobs.submit(bot, interaction, build)

    @app_commands.command(description="Animate a picture into a short clip: one of a job's, or your own")
    @app_commands.describe(
        job_id="The job number from a result's embed",
        number="Which of the job's images, 1–4 (as U1–U4)",
        image="Or: your own picture (PNG, JPEG, WebP or GIF)",
        prompt="What happens in the clip (default: the job's prompt)",
        motion="Low: small, steady movement; High: more movement",
        loop="End where it began, so the clip plays round seamlessly",
        end="A picture the clip should end on",
    )
    @app_commands.choices(motion=_modes(kinds.ANIMATE))
    async def animate(
        self,
        interaction: Interaction,
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        prompt: app_commands.Range[str, 1, 1500] | None = None,
        motion: str | None = None,
        loop: bool = False,
        end: discord.Attachment | None = None,
    ) -> None:
        bot = self.bot
        parsed = None
        if prompt:  # --motion and --loop in the prompt work as the options do
            config = await bot.guild_configs.get(interaction.guild_id)
            profile = await bot.store.profile(interaction.user.id)
            parsed = jobs.parse_members_prompt(bot, config, profile, prompt, with_suffix=False)[0]
        chosen = motion or (parsed.motion if parsed is not None else None) or next(iter(kinds.ANIMATE.strengths))
        strength = _strength(kinds.ANIMATE, chosen)
        looped = loop or (parsed is not None and parsed.loop)
        if end is not None and looped:  # `loop` or the prompt's --loop
            raise UserError("A looping clip ends on its own first picture: give `loop` or an `end` picture, not both.")

        async def finish(job: NewJob) -> NewJob:
            spec = job.spec.replace_render(loop=looped, strength=strength)
            if end is not None:
                native = max(spec.render.width, spec.render.height)
                stored = await read_for_interaction(
                    interaction, end, reader=bot.pictures, pixel_budget=native * native, data_dir=bot.settings.data_dir
                )
                spec = dataclasses.replace(spec, end=stored)
            return dataclasses.replace(job, spec=spec)

        await self._start(
            interaction,
            kinds.ANIMATE,
            strength,
            job_id=job_id,
            number=number,
            image=image,
            prompt=prompt,
            finish=finish,
        )

    @app_commands.command(description='Change a picture with a sentence ("make it night"): a job\'s, or your own')
    @app_commands.describe(
        instruction="What should change, e.g. make it night, remove the hat, paint it in watercolour",
        job_id="The job number from a result's embed",
        number="Which of the job's images, 1–4 (as U1–U4)",
        image="Or: your own picture (PNG, JPEG, WebP or GIF)",
    )
    async def edit(
        self,
        interaction: Interaction,
        instruction: app_commands.Range[str, 1, 1500],
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
    ) -> None:
        await self._start(interaction, kinds.EDIT, None, job_id=job_id, number=number, image=image, prompt=instruction)

    # -- Apps menu on a message --------------------------------------------------------------

    async def upscale_message(self, interaction: Interaction, message: discord.Message) -> None:
        kind = kinds.UPSCALE
        await self._from_message(interaction, message, kind=kind, strength=kind.strengths["subtle"])

    async def vary_message(self, interaction: Interaction, message: discord.Message) -> None:
        profile = await self.bot.store.profile(interaction.user.id)
        kind = kinds.VARIATION  # as strong as V1–V4 under the member's /settings
        strength = kind.strengths.get(profile.settings.get("variation", ""), kind.default_strength)
        assert strength is not None  # VARIATION names its strengths
        await self._from_message(interaction, message, kind=kind, strength=strength)

    async def _from_message(
        self, interaction: Interaction, message: discord.Message, *, kind: JobKind, strength: float
    ) -> None:
        """Ours: work from the job's stored image (a grid asks the member to pick one). Anyone's: the picture."""
        bot = self.bot
        ours = job_image_on(message, bot.user)
        if ours is not None:
            job_id, number = ours
            job = await bot.store.get_job(job_id)
            if number is None and job is not None and len(job.seeds) == 1:
                number = 1
            if number is None:
                raise UserError("That is a grid of four: press U1–U4 to pick one image, then use this on it.")
            await visible_job(bot, interaction, job_id, number)
            await start_child(interaction, job_id, kind=kind, index=number, strength=strength)
            return
        pictures = image_attachments(message)
        if not pictures:
            raise UserError("That message has no picture to work from.")
        await submit_picture(bot, interaction, pictures[0], kind=kind, strength=strength)


class ExtendButton(GuardedItem[discord.ui.Button], template=r"dg:extend:(?P<job>\d+)"):
    """Under a clip: as long again, drawn on from its last frame, at the clip's own motion."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="Extend", emoji="⏩", custom_id=f"dg:extend:{job_id}", row=0))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]))

    async def respond(self, interaction: Interaction) -> None:
        parent = await jobs.job_or_error(interaction.client, interaction, self.job_id)
        strength = parent.spec.render.strength
        if strength not in MOTIONS.values():
            strength = kinds.EXTEND.default_strength
        await start_child(interaction, self.job_id, kind=kinds.EXTEND, index=1, strength=strength)


def clip_view(job: Job, _used: frozenset[int] = frozenset()) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ExtendButton(job.id))
    return view


def install_views(views: JobViews) -> None:
    """Extend under a clip."""
    views.results[ResultButtons.CLIP] = clip_view


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(ExtendButton)
    install_views(bot.views)
    await bot.add_cog(Images(bot))
