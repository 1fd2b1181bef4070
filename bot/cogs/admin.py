"""/config: how this server's GPU is used. Server admins only, checked here and not just hinted.

`default_member_permissions` only decides who sees the command, and server owners can change
that in their integration settings; so every subcommand checks Manage Server (or the server's
`admin_role`) itself, and refuses ephemerally.
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import policy
from bot.client import DreamGrid
from bot.errors import MESSAGE_CHARS, UserError, clip
from bot.guild_config import KEYS, Key
from bot.retention import StorageUsage, format_bytes, storage_usage
from bot.store import ConfigChange

log = logging.getLogger(__name__)

EMBED_FIELD_CHARS = 300  # 12 fields × 300 (and their names) stay well inside the 6,000-character embed limit
# /config show's settings, this many to an embed: Discord takes 25 fields and 6,000 characters per
# message, so the settings go out as several ephemeral messages rather than one that would be refused.
SHOW_FIELDS_PER_EMBED = 12
HISTORY_SHOWN = 20
HISTORY_VALUE_CHARS = 60

Interaction = discord.Interaction[DreamGrid]


def _key(name: str) -> Key:
    key = KEYS.get(name.strip().lower())
    if key is None:
        raise UserError(f"There is no setting `{name[:40]}`. Pick one from the list, or see `/config show`.")
    return key


def _guild_id(interaction: Interaction) -> int:
    """The server's id: the group is guild_only, and `Config.interaction_check` refuses the rest."""
    assert interaction.guild_id is not None
    return interaction.guild_id


def _show_stored(key: Key, value: Any, bot: DreamGrid) -> str:
    """A value from history (None: the default)."""
    if value is None:
        return f"default ({key.show(key.default_for(bot.settings), bot.settings)})"
    return key.show(key.effective(value, bot.settings), bot.settings)


def _storage(usage: StorageUsage, bot: DreamGrid) -> str:
    policy = bot.retention.policy
    limit = f"limit {format_bytes(policy.max_bytes)}" if policy.max_bytes is not None else "no size limit"
    oldest = discord.utils.format_dt(usage.oldest_image, "R") if usage.oldest_image else "none yet"
    return (
        f"images: **{format_bytes(usage.image_bytes)}** in {usage.image_files} files ({limit})\n"
        f"oldest kept image: {oldest}\n"
        f"members' pictures: **{format_bytes(usage.input_bytes)}** in {usage.input_files} files (always kept)\n"
        f"free disk: **{format_bytes(usage.free_bytes)}** of {format_bytes(usage.disk_bytes)}\n"
        f"retention: {policy.describe()}; deleted images are drawn again when asked for"
    )


def _models(bot: DreamGrid) -> str:
    loaded = list(bot.engine.loaded_models)
    limit = bot.settings.max_loaded_models
    lines = [
        f"installed: {', '.join(f'`{m}`' for m in bot.settings.installed_models)}",
        f"loaded now: {', '.join(f'`{m}`' for m in reversed(loaded)) or 'none'} (at most {limit}; "
        "the least recently used is unloaded first and loaded again when a job needs it)",
    ]
    return clip("\n".join(lines), EMBED_FIELD_CHARS)


# Discord hides the group from members without Manage Server, unless the owner says otherwise.
@app_commands.guild_only()
@app_commands.default_permissions(manage_guild=True)
class Config(commands.GroupCog, group_name="config", group_description="Server settings for dreamgrid (admins)"):
    """The /config group: show, set, reset, history."""

    def __init__(self, bot: DreamGrid) -> None:
        self.bot = bot
        super().__init__()

    # Overrides narrow the interaction: discord.py types this hook for any client; ours is DreamGrid.
    async def interaction_check(self, interaction: Interaction) -> bool:  # type: ignore[override]
        """Manage Server or the configured admin role; autocomplete is only the list of keys, so it passes."""
        if interaction.type is discord.InteractionType.autocomplete:
            return True
        if interaction.guild_id is None or not isinstance(interaction.user, discord.Member):
            raise UserError("/config works in a server, not here.")
        if await policy.is_server_admin(self.bot, interaction):
            return True
        admin_role = (await self.bot.guild_configs.get(interaction.guild_id))["admin_role"]
        role = f" or the <@&{admin_role}> role" if admin_role else ""
        raise UserError(f"Only members with the Manage Server permission{role} can use /config.")

    @app_commands.command(name="show", description="Every setting, its value and its default")
    async def show(self, interaction: Interaction) -> None:
        config = await self.bot.guild_configs.get(interaction.guild_id)
        settings = self.bot.settings
        fields = []
        for key in KEYS.values():
            value = key.show(config[key.name], settings)
            marker = "" if config.is_set(key.name) else " (default)"
            lines = f"**{value}**{marker}"
            if key.name == "safety_checker":  # the switch, and what it really does here
                lines += f": {policy.safety_checker_state(self.bot, config)}"
            if config.is_set(key.name):
                lines += f"\ndefault: {key.show(key.default_for(settings), settings)}"
            fields.append((key.name, clip(f"{lines}\n{key.description}", EMBED_FIELD_CHARS)))
        # Walking a large images folder takes a moment, so answer "thinking…" first.
        await interaction.response.defer(ephemeral=True, thinking=True)
        usage = await storage_usage(settings.data_dir)
        fields.append(("storage (the whole bot, set by its operator)", _storage(usage, self.bot)))
        fields.append(("models (the whole bot, set by its operator)", _models(self.bot)))
        pages = [fields[i : i + SHOW_FIELDS_PER_EMBED] for i in range(0, len(fields), SHOW_FIELDS_PER_EMBED)]
        for number, page in enumerate(pages, start=1):
            embed = discord.Embed(
                title="dreamgrid settings for this server" + (f" ({number}/{len(pages)})" if len(pages) > 1 else ""),
                description="Change one with `/config set`, undo with `/config reset`; `/config history` lists changes."
                if number == 1
                else None,
                colour=discord.Colour.blurple(),
            )
            for name, value in page:
                embed.add_field(name=name, value=value, inline=False)
            await interaction.followup.send(embed=embed, ephemeral=True)

    @app_commands.command(name="set", description="Change a setting")
    @app_commands.describe(key="The setting to change", value="Its new value (see /config show)")
    async def set_(self, interaction: Interaction, key: str, value: app_commands.Range[str, 1, 1000]) -> None:
        entry = _key(key)
        configs = self.bot.guild_configs
        config = await configs.get(interaction.guild_id)
        parsed = entry.parse(
            value, settings=self.bot.settings, guild=interaction.guild, current=config.stored(entry.name)
        )
        if (
            entry.name == "safety_checker"
            and parsed
            and not any(self.bot.engine.has_safety_checker(m) for m in config.allowed_models)
        ):
            raise UserError(
                "`safety_checker`: no model on this bot has a safety checker, so turning it on would check nothing."
                " Its operator can set SAFETY_CHECKER=true and install a model that ships one (SD 1.x does)."
            )
        if entry.name == "loras":
            policy.check_loras_fit(self.bot, config, parsed)
        before = config[entry.name]
        await configs.set(_guild_id(interaction), entry.name, parsed, by=interaction.user.id)
        after = (await configs.get(interaction.guild_id))[entry.name]
        log.info("guild %s: %s set %s to %r", interaction.guild_id, interaction.user.id, entry.name, parsed)
        settings = self.bot.settings
        really = ""
        if entry.name == "safety_checker":
            state = policy.safety_checker_state(self.bot, await configs.get(interaction.guild_id))
            really = f" It {state}." if state.startswith("checks") else ""
        await interaction.response.send_message(
            clip(
                f"`{entry.name}` is now {entry.show(after, settings)} (was {entry.show(before, settings)}).{really} "
                "It applies to the next job.",
                MESSAGE_CHARS,
            ),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="reset", description="Put a setting back to its default")
    @app_commands.describe(key="The setting to reset")
    async def reset(self, interaction: Interaction, key: str) -> None:
        entry = _key(key)
        configs = self.bot.guild_configs
        config = await configs.get(interaction.guild_id)
        settings = self.bot.settings
        default = entry.show(entry.default_for(settings), settings)
        if not config.is_set(entry.name):
            await interaction.response.send_message(
                f"`{entry.name}` is already at its default, {default}.", ephemeral=True
            )
            return
        await configs.set(_guild_id(interaction), entry.name, None, by=interaction.user.id)
        await interaction.response.send_message(
            clip(f"`{entry.name}` is back to its default, {default}.", MESSAGE_CHARS), ephemeral=True
        )

    @app_commands.command(name="history", description="Who changed which setting, and when")
    async def history(self, interaction: Interaction) -> None:
        changes = await self.bot.guild_configs.history(_guild_id(interaction), HISTORY_SHOWN)
        if not changes:
            await interaction.response.send_message("No setting has been changed on this server yet.", ephemeral=True)
            return
        lines = [self._line(change) for change in changes]
        header = "Changes, oldest first:"
        if len(lines) == HISTORY_SHOWN:
            header = f"The last {HISTORY_SHOWN} changes, oldest first:"
        # Drop the oldest lines, not the newest, if they would not fit in one message.
        while len("\n".join([header, *lines])) > MESSAGE_CHARS:
            lines.pop(0)
        await interaction.response.send_message(
            "\n".join([header, *lines]), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    @app_commands.command(name="moderation", description="Prompts refused for a banned word or pattern")
    async def moderation(self, interaction: Interaction) -> None:
        refused = await self.bot.store.moderation_log(_guild_id(interaction), HISTORY_SHOWN)
        if not refused:
            await interaction.response.send_message("No prompt has been refused on this server.", ephemeral=True)
            return
        lines = ["Refused prompts, newest first:"]
        for entry in refused:
            when = discord.utils.format_dt(entry["created_at"], "f")
            line = (
                f"{when} <@{entry['user_id']}> in <#{entry['channel_id']}> matched `{clip(entry['matched'], 40)}`:"
                f" {discord.utils.escape_markdown(clip(entry['prompt'], 80))}"
            )
            if len("\n".join([*lines, line])) > MESSAGE_CHARS:
                break
            lines.append(line)
        await interaction.response.send_message(
            "\n".join(lines), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    def _line(self, change: ConfigChange) -> str:
        key = KEYS.get(change.key)
        when = discord.utils.format_dt(change.changed_at, "f")
        if key is None:  # a key from an older version of the bot
            return f"{when} <@{change.changed_by}> changed `{change.key}`"
        old = clip(_show_stored(key, change.old_value, self.bot), HISTORY_VALUE_CHARS)
        if change.new_value is None:
            return f"{when} <@{change.changed_by}> reset `{change.key}` (was {old})"
        new = clip(_show_stored(key, change.new_value, self.bot), HISTORY_VALUE_CHARS)
        return f"{when} <@{change.changed_by}> set `{change.key}`: {old} → {new}"

    @set_.autocomplete("key")
    @reset.autocomplete("key")
    async def _keys(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        current = current.lower().strip()
        return [
            app_commands.Choice(name=clip(f"{key.name}: {key.description}", 100), value=key.name)
            for key in KEYS.values()
            if current in key.name
        ][:25]

    @set_.autocomplete("value")
    async def _values(self, interaction: Interaction, current: str) -> list[app_commands.Choice[str]]:
        key = KEYS.get(str(getattr(interaction.namespace, "key", "") or "").strip().lower())
        if key is None:
            return []
        if key.kind == "bool":
            options = ["on", "off"]
        elif key.kind == "model":
            options = list(self.bot.settings.installed_models)
        elif key.kind == "models":
            options = ["all", *self.bot.settings.installed_models]
        elif key.kind == "aspect":
            options = ["1:1", "3:2", "2:3", "4:3", "3:4", "16:9", "9:16"]
        else:
            return []
        return [app_commands.Choice(name=o, value=o) for o in options if current.lower() in o.lower()][:25]


async def setup(bot: DreamGrid) -> None:
    await bot.add_cog(Config(bot))
