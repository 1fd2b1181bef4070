"""/describe and Apps → Describe: four prompts for a member's picture, and buttons to imagine them.

A describe is a job like any other (kind `describe`: queued fairly, cancellable, shown with /show,
recovered after a crash); the engine's image-to-text model writes the prompts, and they are
recorded with the job. Under the result: 1️⃣–4️⃣ imagine that prompt in the picture's aspect,
🔄 describes the picture again with other phrasings, and Imagine all queues all four.
"""

from __future__ import annotations

import logging
import re
from fractions import Fraction

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, spec_builders
from bot.client import DreamGrid
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.kinds import ResultButtons
from bot.member_pictures import image_attachments, read_for_interaction
from bot.messages import NUMBERS
from bot.rows import Job, NewJob
from bot.spec import JobSpec, RenderSpec
from bot.ui import GuardedItem, JobViews

log = logging.getLogger(__name__)

Interaction = discord.Interaction[DreamGrid]


async def submit_describe(bot: DreamGrid, interaction: Interaction, attachment: discord.Attachment) -> None:
    async def build(config: GuildConfig) -> list[NewJob]:
        model = config.default_model
        native = bot.engine.native_size(model)
        picture = await read_for_interaction(
            interaction, attachment, reader=bot.pictures, pixel_budget=native * native, data_dir=bot.settings.data_dir
        )
        # Nothing is drawn: the render spec only records the picture's size, for the prompts' --ar.
        render = RenderSpec(prompt="", width=picture.width, height=picture.height, steps=1)
        spec = JobSpec(render=render, inputs=(picture,))
        kind = kinds.DESCRIBE
        mode = await jobs.mode_of(bot, interaction.user.id)
        return [jobs.new_job(interaction, kind=kind, prompt="", spec=spec, seeds=kind.seeds(), model=model, mode=mode)]

    await jobs.submit(bot, interaction, build)


def _described(job: Job) -> tuple[str, ...]:
    if job.status != "done" or not job.spec.described:
        raise UserError(f"Job {job.id} has no prompts yet.")
    return job.spec.described


async def _imagine(interaction: Interaction, job_id: int, numbers: list[int] | None) -> None:
    """Queue /imagine for the chosen prompts (None: every one), in the described picture's aspect, all or none."""
    bot = interaction.client

    async def build(config: GuildConfig) -> list[NewJob]:
        job = await jobs.job_or_error(bot, interaction, job_id)
        prompts = _described(job)
        profile = await bot.store.profile(interaction.user.id)
        # The picture's own shape, as an image prompt keeps it.
        ratio = Fraction(job.spec.render.width, job.spec.render.height).limit_denominator(64)
        wanted = []
        for n in numbers or range(1, len(prompts) + 1):
            if n > len(prompts):
                raise UserError(f"Job {job.id} has only {len(prompts)} prompts.")
            text = f"{prompts[n - 1]} --ar {ratio.numerator}:{ratio.denominator}"
            parsed = jobs.parse_members_prompt(bot, config, profile, text)[0]
            model = parsed.model or config.default_model
            defaults = jobs.prompt_defaults(config, profile)
            spec = spec_builders.imagine_spec(
                parsed, settings=bot.settings, engine=bot.engine, model=model, defaults=defaults
            )
            wanted.append(jobs.prompt_job(interaction, kinds.IMAGINE, parsed, spec, model=model, profile=profile))
        return wanted

    await jobs.submit(bot, interaction, build)


class PromptButton(GuardedItem[discord.ui.Button], template=r"dg:desc:(?P<job>\d+):(?P<n>[1-4])"):
    """1️⃣–4️⃣: imagine that prompt."""

    def __init__(self, job_id: int, index: int) -> None:
        super().__init__(discord.ui.Button(emoji=NUMBERS[index - 1], custom_id=f"dg:desc:{job_id}:{index}", row=0))
        self.job_id, self.index = job_id, index

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]), int(match["n"]))

    async def respond(self, interaction: Interaction) -> None:
        await _imagine(interaction, self.job_id, [self.index])


class ImagineAllButton(GuardedItem[discord.ui.Button], template=r"dg:desc:(?P<job>\d+):all"):
    """Imagine all: four jobs, one per prompt."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(label="Imagine all", custom_id=f"dg:desc:{job_id}:all", row=1))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]))

    async def respond(self, interaction: Interaction) -> None:
        await _imagine(interaction, self.job_id, None)


class DescribeAgainButton(GuardedItem[discord.ui.Button], template=r"dg:desc:(?P<job>\d+):again"):
    """🔄: the same picture described again, in other phrasings."""

    def __init__(self, job_id: int) -> None:
        super().__init__(discord.ui.Button(emoji="🔄", custom_id=f"dg:desc:{job_id}:again", row=0))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(int(match["job"]))

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client

        async def build(config: GuildConfig) -> list[NewJob]:
            parent = await jobs.job_or_error(bot, interaction, self.job_id)
            _described(parent)
            kind = kinds.DESCRIBE
            spec = JobSpec(render=parent.spec.render, inputs=parent.spec.inputs)
            job = jobs.new_job(
                interaction,
                kind=kind,
                prompt="",
                spec=spec,
                seeds=kind.seeds(),
                model=parent.model,
                mode=await jobs.mode_of(bot, interaction.user.id),
                parent_id=parent.id,
            )
            return [job]

        await jobs.submit(bot, interaction, build)


BUTTONS = (PromptButton, ImagineAllButton, DescribeAgainButton)


def described_view(job: Job, used: frozenset[int] = frozenset()) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    if job.spec.unfamiliar:  # no prompts to draw, and asking again would only guess
        return view
    for index in range(1, len(job.spec.described) + 1):
        view.add_item(PromptButton(job.id, index))
    view.add_item(DescribeAgainButton(job.id))
    view.add_item(ImagineAllButton(job.id))
    return view


class Describe(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot
        self.menu = app_commands.ContextMenu(name="Describe", callback=self.describe_message)

    async def cog_load(self) -> None:
        self.bot.tree.add_command(self.menu)

    async def cog_unload(self) -> None:
        self.bot.tree.remove_command(self.menu.name, type=self.menu.type)

    @app_commands.command(description="Four prompts that describe your picture, to imagine from")
    @app_commands.describe(image="The picture to describe (PNG, JPEG, WebP or GIF)")
    async def describe(self, interaction: Interaction, image: discord.Attachment) -> None:
        await submit_describe(self.bot, interaction, image)

    async def describe_message(self, interaction: Interaction, message: discord.Message) -> None:
        pictures = image_attachments(message)
        if not pictures:
            raise UserError("That message has no picture to describe.")
        await submit_describe(self.bot, interaction, pictures[0])


def install_views(views: JobViews) -> None:
    views.results[ResultButtons.PROMPTS] = described_view


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(*BUTTONS)
    install_views(bot.views)
    await bot.add_cog(Describe(bot))
