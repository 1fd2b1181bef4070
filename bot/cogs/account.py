"""A member's own things: /info, /settings, /prefer, /show and /help."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import jobs, kinds, policy
from bot.client import DreamGrid
from bot.delivery import final_message
from bot.errors import UserError
from bot.guild_config import GuildConfig
from bot.prompt import PARAMETER_NAMES, PromptError, parse_prompt
from bot.rows import ImageRow
from bot.ui import GuardedItem
from engine import params as render_params
from engine.params import PARAMETERS

ASPECTS = ("1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16")
QUALITIES = {render_params.quality_text(q): q for q in render_params.QUALITY_VALUES}
STYLIZE_LEVELS = {"low (50)": 50, "medium (100)": 100, "high (250)": 250, "very high (750)": 750}
OPTION_NAME_CHARS = set("abcdefghijklmnopqrstuvwxyz0123456789_-")
MAX_OPTIONS = 20  # Midjourney's limit on custom options

Interaction = discord.Interaction[DreamGrid]


def settings_embed(settings: dict[str, Any], suffix: str) -> discord.Embed:
    embed = discord.Embed(title="Your settings", colour=discord.Colour.blurple())
    embed.add_field(name="Model", value=settings.get("model", "the server's default"))
    embed.add_field(name="Aspect", value=settings.get("aspect", "1:1"))
    embed.add_field(name="Quality", value=str(settings.get("quality", 1)))
    embed.add_field(name="Stylize", value=str(settings.get("stylize", 100)))
    embed.add_field(name="Remix", value="on" if settings.get("remix") else "off")
    embed.add_field(name="V buttons", value=f"Vary ({settings.get('variation', 'strong').title()})")
    embed.add_field(name="Mode", value=jobs.member_mode(settings).title())
    embed.add_field(name="Suffix", value=f"`{suffix}`" if suffix else "none", inline=False)
    embed.set_footer(text="Parameters typed in a prompt override these.")
    return embed


class SettingsSelect(GuardedItem[discord.ui.Select], template=r"dg:set:(?P<key>aspect|quality|stylize)"):
    """One of /settings' menus; the custom_id names the setting, the choice is its value."""

    CHOICES: dict[str, Mapping[str, str | float]] = {  # the label shown: the value stored
        "aspect": {a: a for a in ASPECTS},
        "quality": QUALITIES,
        "stylize": STYLIZE_LEVELS,
    }

    def __init__(self, key: str, current: Any = None) -> None:
        options = [
            discord.SelectOption(label=f"{key.title()}: {label}", value=label, default=value == current)
            for label, value in self.CHOICES[key].items()
        ]
        super().__init__(discord.ui.Select(custom_id=f"dg:set:{key}", options=options, min_values=1, max_values=1))
        self.key = key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(match["key"])

    async def respond(self, interaction: Interaction) -> None:
        value = self.CHOICES[self.key].get(self.item.values[0] if self.item.values else "")
        if value is None:  # a choice from an older version of the menu, or a hand-made one
            await interaction.response.send_message(
                "That choice isn't offered any more; open `/settings` again.", ephemeral=True
            )
            return
        store = interaction.client.store
        settings = await store.update_settings(interaction.user.id, **{self.key: value})
        profile = await store.profile(interaction.user.id)
        config = await interaction.client.guild_configs.get(interaction.guild_id)
        await interaction.response.edit_message(
            embed=settings_embed(settings, profile.suffix), view=settings_view(settings, config.allowed_models)
        )


class ModelSelect(GuardedItem[discord.ui.Select], template=r"dg:set:model"):
    """/settings' model menu: the models this server allows, by the short names `--model` takes."""

    def __init__(self, models: list[str] | None = None, current: str | None = None) -> None:
        options = [
            discord.SelectOption(label=f"Model: {name}"[:100], value=name[:100], default=name == current)
            for name in (models or ["-"])[:25]
        ]
        super().__init__(discord.ui.Select(custom_id="dg:set:model", options=options, min_values=1, max_values=1))

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls()

    async def respond(self, interaction: Interaction) -> None:
        bot = interaction.client
        config = await bot.guild_configs.get(interaction.guild_id)
        choice = self.item.values[0]
        if choice not in config.allowed_models:
            raise UserError(f"`{choice}` isn't a model here: pick one of {', '.join(config.allowed_models)}.")
        settings = await bot.store.update_settings(interaction.user.id, model=choice)
        profile = await bot.store.profile(interaction.user.id)
        await interaction.response.edit_message(
            embed=settings_embed(settings, profile.suffix), view=settings_view(settings, config.allowed_models)
        )


class SettingsButton(GuardedItem[discord.ui.Button], template=r"dg:set:(?P<key>remix|variation|reset)"):
    def __init__(self, key: str, settings: dict[str, Any] | None = None) -> None:
        settings = settings or {}
        button: discord.ui.Button[discord.ui.View]
        if key == "remix":
            on = bool(settings.get("remix"))
            button = discord.ui.Button(
                label=f"Remix: {'on' if on else 'off'}",
                style=discord.ButtonStyle.success if on else discord.ButtonStyle.secondary,
                custom_id="dg:set:remix",
            )
        elif key == "variation":
            button = discord.ui.Button(
                label=f"V buttons: Vary ({settings.get('variation', 'strong').title()})", custom_id="dg:set:variation"
            )
        else:
            button = discord.ui.Button(label="Reset", style=discord.ButtonStyle.danger, custom_id="dg:set:reset")
        super().__init__(button)
        self.key = key

    @classmethod
    async def from_custom_id(cls, interaction: discord.Interaction, item: discord.ui.Item, match: re.Match[str], /):
        return cls(match["key"])

    async def respond(self, interaction: Interaction) -> None:
        store = interaction.client.store
        current = (await store.profile(interaction.user.id)).settings
        if self.key == "remix":
            settings = await store.update_settings(interaction.user.id, remix=not current.get("remix") or None)
        elif self.key == "variation":
            flipped = "subtle" if current.get("variation", "strong") == "strong" else None
            settings = await store.update_settings(interaction.user.id, variation=flipped)
        else:
            await store.reset_settings(interaction.user.id)
            settings = {}
        profile = await store.profile(interaction.user.id)
        config = await interaction.client.guild_configs.get(interaction.guild_id)
        await interaction.response.edit_message(
            embed=settings_embed(settings, profile.suffix), view=settings_view(settings, config.allowed_models)
        )


def settings_view(settings: dict[str, Any], models: list[str]) -> discord.ui.View:
    """Three menus, a model menu when there is a choice, and the buttons: five rows at most."""
    view = discord.ui.View(timeout=None)
    view.add_item(SettingsSelect("aspect", settings.get("aspect", "1:1")))
    view.add_item(SettingsSelect("quality", settings.get("quality", 1.0)))
    view.add_item(SettingsSelect("stylize", settings.get("stylize", 100)))
    if len(models) > 1:
        view.add_item(ModelSelect(models, settings.get("model")))
    for key in ("remix", "variation", "reset"):
        view.add_item(SettingsButton(key, settings))
    return view


class Account(commands.Cog):
    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot

    @app_commands.command(description="Your jobs in the queue, today's count, your mode and fast time left")
    async def info(self, interaction: Interaction) -> None:
        store = self.bot.store
        config = await self.bot.guild_configs.get(interaction.guild_id)
        stats = await store.user_stats(interaction.user.id)
        active = await store.active_jobs(interaction.user.id)
        profile = await store.profile(interaction.user.id)
        embed = discord.Embed(title="Your dreamgrid", colour=discord.Colour.blurple())
        embed.add_field(name="Running", value=str(stats.running))
        embed.add_field(name="Queued", value=str(stats.queued))
        embed.add_field(name="Jobs today", value=str(stats.jobs_today))
        embed.add_field(name="Jobs in all", value=str(stats.jobs_total))
        embed.add_field(name="GPU time", value=_duration(stats.gpu_seconds))
        embed.add_field(name="Mode", value=jobs.member_mode(profile.settings).title())
        embed.add_field(name="Fast time left", value=await _fast_time_left(self.bot, interaction, config))
        # This server's limits: /config can lower the bot's.
        embed.add_field(
            name="Limits",
            value=f"{config['max_running_per_user']} running, {config['max_queued_per_user']} waiting",
        )
        if active:
            lines = [
                f"`{job.id}` {job.status}{f' {job.progress:.0%}' if job.status == 'running' else ''}"
                f"{' (relax)' if job.mode == 'relax' else ''}: {job.prompt[:60]}"
                for job in active[:10]
            ]
            embed.add_field(name="In progress", value="\n".join(lines), inline=False)
        await interaction.response.send_message(embed=embed, ephemeral=True)

    @app_commands.command(description="Fast mode: your jobs start first and use your monthly fast time")
    async def fast(self, interaction: Interaction) -> None:
        await self.bot.store.update_settings(interaction.user.id, mode=None)
        config = await self.bot.guild_configs.get(interaction.guild_id)
        left = await _fast_time_left(self.bot, interaction, config)
        await interaction.response.send_message(
            f"Fast mode is **on**: your jobs start before Relax jobs. Fast time left this month: {left}.",
            ephemeral=True,
        )

    @app_commands.command(description="Relax mode: your jobs use no fast time and start when no Fast job waits")
    async def relax(self, interaction: Interaction) -> None:
        await self.bot.store.update_settings(interaction.user.id, mode="relax")
        await interaction.response.send_message(
            "Relax mode is **on**: your jobs use no fast time and start when no Fast job waits"
            " (sooner the less you relaxed today). `--fast` runs one job fast; /fast switches back.",
            ephemeral=True,
        )

    @app_commands.command(description="Your defaults: aspect, quality, stylize, model, Remix")
    async def settings(self, interaction: Interaction) -> None:
        profile = await self.bot.store.profile(interaction.user.id)
        config = await self.bot.guild_configs.get(interaction.guild_id)
        await interaction.response.send_message(
            embed=settings_embed(profile.settings, profile.suffix),
            view=settings_view(profile.settings, config.allowed_models),
            ephemeral=True,
        )

    @app_commands.command(description="Show one of your jobs again, with working buttons")
    @app_commands.describe(job_id="The job number from the result's embed")
    async def show(self, interaction: Interaction, job_id: app_commands.Range[int, 1]) -> None:
        job = await self.bot.store.get_job(job_id)
        if job is None or job.user_id != interaction.user.id:
            raise UserError(f"You have no job {job_id}.")
        if job.status != "done":
            raise UserError(f"Job {job_id} is {job.status}; there is nothing to show yet.")
        rows: list[ImageRow] = []
        if kinds.get(job.kind).image_count:  # pictures: ours, or drawn again when they are gone
            stored = await jobs.stored_or_redraw(self.bot, interaction, job, then="it appears above when it is done.")
            if stored is None:
                return
            rows = stored[0]
        final = await final_message(
            job,
            rows,
            data_dir=self.bot.settings.data_dir,
            views=self.bot.views,
            upload_limit=interaction.filesize_limit,
        )
        assert final.file is not None and final.embed is not None  # a finished job shows its result
        await interaction.response.send_message(
            content=final.content,
            embed=final.embed,
            file=final.file,
            view=final.view or discord.utils.MISSING,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    prefer = app_commands.Group(name="prefer", description="Your prompt preferences")
    option = app_commands.Group(name="option", description="Your own --parameters", parent=prefer)

    @prefer.command(name="suffix", description="Text added to the end of every prompt (empty to clear)")
    @app_commands.describe(value="e.g. --ar 16:9 --stylize 250")
    async def prefer_suffix(self, interaction: Interaction, value: app_commands.Range[str, 0, 200] = "") -> None:
        value = value.strip()
        if value:
            _check_parameters(value, self.bot, "suffix")
        await self.bot.store.set_suffix(interaction.user.id, value)
        await interaction.response.send_message(
            f"Suffix set to `{value}`." if value else "Suffix cleared.", ephemeral=True
        )

    @prefer.command(name="remix", description="Turn Remix mode on or off")
    async def prefer_remix(self, interaction: Interaction) -> None:
        store = self.bot.store
        current = (await store.profile(interaction.user.id)).settings.get("remix", False)
        await store.update_settings(interaction.user.id, remix=not current or None)
        await interaction.response.send_message(
            "Remix mode is **on**: V and 🔄 let you edit the prompt first."
            if not current
            else "Remix mode is **off**.",
            ephemeral=True,
        )

    @option.command(name="set", description="Make --NAME stand for some parameters")
    @app_commands.describe(option="The option's name, used as --NAME", value="e.g. --ar 3:2 --chaos 20")
    async def option_set(
        self,
        interaction: Interaction,
        option: app_commands.Range[str, 1, 20],
        value: app_commands.Range[str, 1, 200],
    ) -> None:
        name = option.strip().lower().lstrip("-")
        if not name or set(name) - OPTION_NAME_CHARS:
            raise UserError("Option names may use letters, digits, `-` and `_` only.")
        if name in PARAMETER_NAMES:
            raise UserError(f"`--{name}` is already a parameter; pick another name.")
        _check_parameters(value, self.bot, f"--{name}")
        profile = await self.bot.store.profile(interaction.user.id)
        if name not in profile.options and len(profile.options) >= MAX_OPTIONS:
            raise UserError(f"You have {MAX_OPTIONS} options already; delete one first.")
        await self.bot.store.set_option(interaction.user.id, name, value.strip())
        await interaction.response.send_message(f"`--{name}` now means `{value.strip()}`.", ephemeral=True)

    @option.command(name="list", description="Your --options")
    async def option_list(self, interaction: Interaction) -> None:
        options = (await self.bot.store.profile(interaction.user.id)).options
        text = (
            "\n".join(f"`--{k}` → `{v}`" for k, v in options.items())
            or "You have no options yet: `/prefer option set`."
        )
        await interaction.response.send_message(text, ephemeral=True)

    @option.command(name="delete", description="Forget one of your --options")
    async def option_delete(self, interaction: Interaction, option: str) -> None:
        name = option.strip().lower().lstrip("-")
        if not await self.bot.store.delete_option(interaction.user.id, name):
            raise UserError(f"You have no option `--{name}`.")
        await interaction.response.send_message(f"`--{name}` deleted.", ephemeral=True)

    @option_delete.autocomplete("option")
    async def _option_names(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        options = (await self.bot.store.profile(interaction.user.id)).options
        return [app_commands.Choice(name=k, value=k) for k in options if current.lower() in k][:25]

    @app_commands.command(description="How to use dreamgrid")
    async def help(self, interaction: Interaction) -> None:
        embed = discord.Embed(title="dreamgrid", colour=discord.Colour.blurple(), description=HELP_TEXT)
        config = await self.bot.guild_configs.get(interaction.guild_id)
        models = ", ".join(f"`{m}`" for m in config.allowed_models)
        embed.add_field(
            name="Models here", value=f"{models} (default `{config.default_model}`; pick with `--model NAME`)"[:1024]
        )
        await interaction.response.send_message(embed=embed, ephemeral=True)


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


async def _fast_time_left(bot: DreamGrid, interaction: Interaction, config: GuildConfig) -> str:
    left = await policy.fast_time_left(bot, interaction, config)
    if left is None:
        return "no limit"
    return f"{_duration(left)} of {config['fast_hours']} h"


def _parameters_line() -> str:
    """`--ar W:H` (`--aspect`) · `--seed N` · …, from the one table of parameters."""
    parts = []
    for parameter in PARAMETERS:
        aliases = "".join(f" (`--{alias}`)" for alias in parameter.aliases)
        low_high = (
            f" {parameter.bounds[0]}–{parameter.bounds[1]}" if parameter.bounds and parameter.bounds[1] <= 1000 else ""
        )
        parts.append(f"`{parameter.usage}`{low_high}{aliases}")
    return " · ".join(parts)


HELP_TEXT = f"""\
**/imagine** `a lighthouse at dusk --ar 3:2` draws four images.
Under the grid: **U1–U4** show one image on its own, **V1–V4** draw variations of one, \
**🔄** draws the prompt again with new seeds.
Under one image: **Vary** (Strong, Subtle, or **Region**: redraw the cells you pick), **Upscale**, \
**Zoom Out** 2x/1.5x or **Custom Zoom** (`--zoom 1–2`, a new `--ar`), **Make Square**, \
**⬅️ ➡️ ⬆️ ⬇️** to extend the picture that way.

**Parameters**: {_parameters_line()} · `{{red, blue}} bird` for one job per choice.

**Your pictures**: /imagine `image:` steers the grid by your picture · /upscale and /variation take \
a job's image (`job_id number`) or your `image` · Apps → **Upscale 2x** / **Vary** on any message with a \
picture · /edit changes one by a sentence · /animate makes a clip of one (`--motion low|high`, \
`--loop`) · /blend mixes 2–5 pictures · /describe (or Apps → **Describe**) writes four prompts for \
one · `--sref` takes a picture's style (`random`, a code, `12:3`) · /moodboard create|add|list|delete \
collects pictures into one style, `--sref mb:NAME`.

**Styles**: /tune trains one from 5–30 of your pictures (attached, or job images like `12, 15:2`) \
and gives you a code for `--lora CODE` · /styles lists yours · `<lora:NAME:0.8>` works in prompts too.

**Yours**: /settings (defaults, Remix) · /fast · /relax · /prefer suffix · /prefer option set · /info \
· /show JOB · /queue · /cancel JOB
"""


def _check_parameters(value: str, bot: DreamGrid, what: str) -> None:
    """A suffix or option must be parameters that parse; check with a placeholder prompt."""
    try:
        parse_prompt(f"x {value}", models=bot.settings.installed_models)
    except PromptError as exc:
        raise UserError(f"{what}: {exc}") from None


async def setup(bot: DreamGrid) -> None:
    bot.add_dynamic_items(SettingsSelect, ModelSelect, SettingsButton)
    await bot.add_cog(Account(bot))
