"""Members' own images: /upscale and /variation, and the Apps menu's Upscale 2x and Vary.

The source is either one image of an earlier job (`job_id` + `number`, as U1–U4 pick it, or the
target of an Apps action on one of our tile posts) or a member's own picture (an `image` upload,
or the target of an Apps action on any message with a picture). Either way the result is an
ordinary job of kind upscale or variation: it shows progress, ends with the same embed and
buttons as a button-made one, and is stored, found again with /show and recovered after a crash.
A member's picture goes through `bot.image_inputs` and is kept as our own copy with the job.
"""

from __future__ import annotations

import logging
import re

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, policy
from bot.client import DreamGrid
from bot.cogs.imagine import STRENGTHS, UPSCALE_STRENGTHS, child_job, start_child
from bot.errors import UserError
from bot.image_inputs import image_attachments, read_for_interaction
from bot.prompt import ParsedPrompt, PromptError, parse_prompt
from bot.store import Job, NewJob
from engine import params as render_params

log = logging.getLogger(__name__)

_TILE_FIELD = re.compile(r"^(?P<job>\d+), image (?P<n>[1-4])$")  # messages.tile_embed's "Job" field
_SHOW_FOOTER = re.compile(r"^/show (?P<job>\d+) ")  # messages.result_embed's footer

UPSCALE_MODES = [app_commands.Choice(name=mode.title(), value=mode) for mode in UPSCALE_STRENGTHS]
VARIATION_MODES = [app_commands.Choice(name=mode.title(), value=mode) for mode in STRENGTHS]


def may_see(interaction: discord.Interaction, job: Job) -> bool:
    """A member may work from their own jobs, and from jobs posted where they can read them."""
    if job.user_id == interaction.user.id:
        return True
    if job.guild_id is None or job.guild_id != interaction.guild_id or interaction.guild is None:
        return False
    channel = interaction.guild.get_channel_or_thread(job.channel_id)
    member = interaction.user
    return channel is not None and isinstance(member, discord.Member) and channel.permissions_for(member).view_channel


async def visible_job(bot: DreamGrid, interaction: discord.Interaction, job_id: int, number: int) -> Job:
    if not 1 <= number <= 4:
        raise UserError(f"`number` is which image of the job, 1–4 (as on U1–U4), not {number}.")
    job = await bot.store.get_job(job_id)
    if job is None or not may_see(interaction, job):
        raise UserError(f"You have no job {job_id}, and none was posted where you can see it.")
    if job.status != "done":
        raise UserError(f"Job {job_id} has no finished images to work from.")
    count = len(job.seeds)
    if number > count:
        raise UserError(f"Job {job_id} has only one image: use `number: 1`.")
    return job


async def job_from_upload(
    bot: DreamGrid,
    interaction: discord.Interaction,
    attachment: discord.Attachment,
    *,
    kind: str,
    strength: float,
    prompt: str = "",
) -> NewJob:
    """An upscale or variation of a member's own picture; the picture's copy is stored with the job."""
    config = await bot.guild_configs.get(interaction.guild_id)
    profile = await bot.store.profile(interaction.user.id)
    parsed = ParsedPrompt(text="", raw="")
    if prompt.strip():
        try:
            parsed = parse_prompt(prompt, options=profile.options, models=bot.settings.installed_models, max_jobs=1)[0]
        except PromptError as exc:
            raise UserError(str(exc)) from None
    model = parsed.model or config.default_model
    policy.check_model(config, model)
    native = bot.engine.native_size(model)
    stored = await read_for_interaction(
        interaction, attachment, pixel_budget=native * native, data_dir=bot.settings.data_dir
    )
    params = jobs.imagine_params(parsed, bot=bot, model=model, defaults=profile.settings)
    params.update(
        width=stored.width,
        height=stored.height,
        aspect=None,
        strength=strength,
        steps=render_params.img2img_steps(params["steps"], strength),
        input=stored.to_record(),
    )
    count = 1 if kind == "upscale" else 4
    return jobs.new_job(
        interaction,
        kind=kind,
        prompt=parsed.raw,
        params=params,
        seeds=jobs.seeds_for(parsed.seed, count=count),
        model=model,
    )


async def submit_upload(
    bot: DreamGrid,
    interaction: discord.Interaction,
    attachment: discord.Attachment,
    *,
    kind: str,
    strength: float,
    prompt: str = "",
) -> None:
    job = await job_from_upload(bot, interaction, attachment, kind=kind, strength=strength, prompt=prompt)
    await jobs.submit(bot, interaction, [job])


def job_image_on(message: discord.Message, bot_user: discord.abc.User | None) -> tuple[int, int | None] | None:
    """(job id, image number) when `message` is one of our posts; number None for a grid."""
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
    @app_commands.choices(mode=UPSCALE_MODES)
    async def upscale(
        self,
        interaction: discord.Interaction,
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        mode: str = "subtle",
    ) -> None:
        strength = _strength(UPSCALE_STRENGTHS, mode)
        await self._start(interaction, kind="upscale", strength=strength, job_id=job_id, number=number, image=image)

    @app_commands.command(description="Four variations of an image: one of a job's, or your own picture")
    @app_commands.describe(
        job_id="The job number from a result's embed",
        number="Which of the job's images, 1–4 (as V1–V4)",
        image="Or: your own picture (PNG, JPEG, WebP or GIF)",
        mode="Strong changes more; Subtle stays close",
        prompt="A new prompt (default: the job's prompt; none for your own picture)",
    )
    @app_commands.choices(mode=VARIATION_MODES)
    async def variation(
        self,
        interaction: discord.Interaction,
        job_id: app_commands.Range[int, 1] | None = None,
        number: app_commands.Range[int, 1, 4] | None = None,
        image: discord.Attachment | None = None,
        mode: str = "strong",
        prompt: app_commands.Range[str, 1, 1500] | None = None,
    ) -> None:
        strength = _strength(STRENGTHS, mode)
        await self._start(
            interaction, kind="variation", strength=strength, job_id=job_id, number=number, image=image, prompt=prompt
        )

    async def _start(
        self,
        interaction: discord.Interaction,
        *,
        kind: str,
        strength: float,
        job_id: int | None,
        number: int | None,
        image: discord.Attachment | None,
        prompt: str | None = None,
    ) -> None:
        bot = self.bot
        if image is not None and (job_id is not None or number is not None):
            raise UserError("Give either `job_id` and `number`, or an `image`: not both.")
        if image is None and (job_id is None or number is None):
            raise UserError("Say which image: `job_id` and `number` (1–4), or upload one with `image`.")
        await policy.gate(bot, interaction)
        if image is not None:
            await submit_upload(bot, interaction, image, kind=kind, strength=strength, prompt=prompt or "")
            return
        assert job_id is not None and number is not None
        parent = await visible_job(bot, interaction, job_id, number)
        job = await child_job(bot, interaction, parent, kind=kind, index=number, strength=strength, prompt=prompt)
        await jobs.submit(bot, interaction, [job])

    # -- Apps menu on a message --------------------------------------------------------------

    async def upscale_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        await self._from_message(interaction, message, kind="upscale", strength=render_params.UPSCALE_SUBTLE)

    async def vary_message(self, interaction: discord.Interaction, message: discord.Message) -> None:
        profile = await self.bot.store.profile(interaction.user.id)
        strength = STRENGTHS[profile.settings.get("variation", "strong")]
        await self._from_message(interaction, message, kind="variation", strength=strength)

    async def _from_message(
        self, interaction: discord.Interaction, message: discord.Message, *, kind: str, strength: float
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
        await policy.gate(bot, interaction)
        await submit_upload(bot, interaction, pictures[0], kind=kind, strength=strength)


def _strength(table: dict[str, float], mode: str) -> float:
    if mode not in table:
        raise UserError(f"`mode` is one of {', '.join(m.title() for m in table)}.")
    return table[mode]


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Images(bot))
