"""Per-server settings (`/config`): a typed registry of every key, and a cache of each server's values.

A key knows its type, default, allowed range and how to read what an admin typed; a bad value
raises `ConfigError`, one line naming what is allowed. Values are stored as JSON in
`guild_settings` (only the keys an admin changed), every change is recorded in `config_history`,
and the cache of a server's values is dropped on each write, so the next job sees the change.
Some defaults and ranges come from the bot's own settings (MAX_STEPS, the installed models):
a server can tighten them, never loosen them.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bot.errors import UserError
from bot.moderation import BannedRules, PatternRefused, compile_rule, is_pattern
from bot.moderation import split_list as _split
from bot.prompt import ALIASABLE, MAX_ASPECT, PromptError, alias_key, parse_prompt
from engine.params import MAX_STYLE_REFERENCES

if TYPE_CHECKING:
    import discord

    from bot.settings import Settings
    from bot.store import ConfigChange, Store

MAX_LIST_ITEMS = 100
MAX_WORD_CHARS = 100
MAX_ALIASES = 25
MAX_ALIAS_CHARS = 200  # an alias's parameters
MAX_QUOTA = 10_000
FAST_HOURS_DEFAULT = 15  # Midjourney Standard's monthly fast GPU hours
MAX_FAST_HOURS = 10_000
IMAGE_SIZE_RANGE = (64, 4096)
# max_image_size's default, per model: a 4:1 tile is twice the model's tile size long, and Upscale doubles it.
MODEL_SIZE_FACTOR = 4
_MISSING = object()
NO_LORAS = "-"  # /config loras none: stored as this one entry (an empty list means all of the bot's)
_CLEAR = {"none", "all", "everywhere", "off", "clear", "default", "-"}
_TRUE = {"on", "true", "yes", "1", "enable", "enabled", "allow", "allowed"}
_FALSE = {"off", "false", "no", "0", "disable", "disabled", "deny", "denied"}
_CHANNEL = re.compile(r"<#(\d+)>|(\d{15,21})")
_ROLE = re.compile(r"<@&(\d+)>|(\d{15,21})")
_MEMBER = re.compile(r"<@!?(\d+)>|(\d{15,21})")


class ConfigError(UserError):
    """A value an admin has to fix; the message names what is allowed."""


Bound = int | Callable[["Settings"], int]


@dataclass(frozen=True, slots=True, kw_only=True)
class Key:
    name: str
    kind: str  # bool, int, aspect, model, models, loras, channels, role, members, role_quotas, words, aliases
    description: str  # shown in /config show and docs/operators.md's table; one short line
    default: Any | Callable[[Settings], Any]
    low: Bound | None = None
    high: Bound | None = None
    zero_means: str | None = None  # e.g. "no quota"

    def default_for(self, settings: Settings) -> Any:
        return self.default(settings) if callable(self.default) else self.default

    def bounds(self, settings: Settings) -> tuple[int, int]:
        def value(bound: Bound | None) -> int:
            return bound(settings) if callable(bound) else int(bound or 0)

        return value(self.low), value(self.high)

    def allowed(self, settings: Settings) -> str:
        """What values this key takes, for error messages and docs/operators.md."""
        if self.kind == "bool":
            return "`on` or `off`"
        if self.kind == "int":
            low, high = self.bounds(settings)
            text = f"a whole number from {low} to {high}"
            return f"{text} (0: {self.zero_means})" if self.zero_means and low == 0 else text
        if self.kind == "aspect":
            return f"a ratio of whole numbers like `3:2`, from 1:{MAX_ASPECT} to {MAX_ASPECT}:1"
        if self.kind == "model":
            return "one of the installed models: " + ", ".join(f"`{m}`" for m in settings.installed_models)
        if self.kind == "models":
            return "`all`, or a comma list of the installed models: " + ", ".join(
                f"`{m}`" for m in settings.installed_models
            )
        if self.kind == "loras":
            names = ", ".join(f"`{name}`" for name in settings.lora_sources) or "none are installed"
            return f"`all`, `none`, or a comma list of the bot's LoRAs: {names}"
        if self.kind == "channels":
            return "`all`, or a comma list of channels like #art, #bots"
        if self.kind == "role":
            return "a role like @Admins, or `none`"
        if self.kind == "members":
            return "`none`, or a comma list of members like @someone (or their ids)"
        if self.kind == "role_quotas":
            return (
                f"`none`, or a comma list like `@Patrons: 100, @Guests: 5` (jobs a day, 0–{MAX_QUOTA:,}, 0: no quota)"
            )
        if self.kind == "words":
            return f"`none`, or a comma list of words and `/regex/` patterns (each up to {MAX_WORD_CHARS} characters)"
        if self.kind == "aliases":
            names = ", ".join(f"`--{name}`" for name in sorted(ALIASABLE - {"version"}))
            return (
                "`none`, or a `;` list like `v 7 = --model NAME; raw = --stylize 0` (`+` adds, `-v 7` removes),"
                f" of {names}"
            )
        raise AssertionError(self.kind)

    # -- reading what an admin typed -----------------------------------------------------

    def parse(self, text: str, *, settings: Settings, guild: discord.Guild | None = None, current: Any = None) -> Any:
        """The value to store for `text`; lists take `+a, b` (add) and `-a` (remove) too."""
        text = text.strip()
        if self.kind == "aliases":
            return self._parse_aliases(text, settings, current or {})
        if self.kind == "loras" and text.lower() in ("none", "off"):
            return [NO_LORAS]
        if self.kind in ("models", "loras", "channels", "members", "words", "role_quotas"):
            op = text[:1] if text[:1] in "+-" and len(text) > 1 else ""
            items = _split(text[len(op) :])
            if not op and (not items or (len(items) == 1 and items[0].lower() in _CLEAR)):
                return {} if self.kind == "role_quotas" else []
            parsed = self._parse_items(items, settings, guild)
            if op == "+":
                parsed = _merge(current, parsed)
            elif op == "-":
                parsed = _remove(current, parsed)
            if len(parsed) > MAX_LIST_ITEMS:
                raise self.error(f"that makes {len(parsed)} entries (the most is {MAX_LIST_ITEMS})", settings)
            return parsed
        if self.kind == "bool":
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise self.error(f"`{_short(text)}` is not on or off", settings)
        if self.kind == "int":
            low, high = self.bounds(settings)
            try:
                number = int(text.replace(",", "").replace("_", ""))
            except ValueError:
                raise self.error(f"`{_short(text)}` is not a whole number", settings) from None
            if not low <= number <= high:
                raise self.error(f"{number} is out of range", settings)
            return number
        if self.kind == "aspect":
            match = re.fullmatch(r"(\d{1,5})\s*:\s*(\d{1,5})", text)
            if not match or 0 in (int(match[1]), int(match[2])):
                raise self.error(f"`{_short(text)}` is not a ratio", settings)
            w, h = int(match[1]), int(match[2])
            if max(w / h, h / w) > MAX_ASPECT:
                raise self.error(f"{w}:{h} is too narrow", settings)
            g = math.gcd(w, h)
            return f"{w // g}:{h // g}"
        if self.kind == "model":
            model = _find_model(text, settings.installed_models)
            if model is None:
                raise self.error(f"`{_short(text)}` is not installed", settings)
            return model
        if self.kind == "role":
            if text.lower() in _CLEAR:
                return None
            role = _find_role(text, guild) or _raise(self.error(f"I can't find the role `{_short(text)}`", settings))
            if guild is not None and role == guild.id:  # @everyone's id is the server's
                raise self.error("@everyone can't be it: that would make every member an admin", settings)
            return role
        raise AssertionError(self.kind)

    def _parse_aliases(self, text: str, settings: Settings, current: Mapping[str, str]) -> dict[str, str]:
        """`v 7 = --model dream7; raw = --stylize 0` -> {"v 7": "--model dream7", "raw": "--stylize 0"};
        `+…` adds to the current aliases, `-v 7; raw` removes (`--v 7 = …` is a name, not a removal)."""
        op = text[:1] if text[:1] in "+-" and len(text) > 1 and text[1] != "-" else ""
        entries = [entry.strip() for entry in text[len(op) :].split(";") if entry.strip()]
        if not op and (not entries or (len(entries) == 1 and entries[0].lower() in _CLEAR)):
            return {}
        if op == "-":
            return {key: value for key, value in current.items() if key not in {_alias_name(e) for e in entries}}
        aliases = dict(current) if op == "+" else {}
        for entry in entries:
            written, sep, parameters = entry.partition("=")
            if not sep:
                raise self.error(f"`{_short(entry)}` needs `=` and what it means, like `raw = --stylize 0`", settings)
            key = _alias_name(written)
            name = key.split(" ")[0]
            if name not in ALIASABLE:
                raise self.error(f"`--{_short(name)}` can't be an alias", settings)
            if len(parameters) > MAX_ALIAS_CHARS:
                raise self.error(f"`--{key}` means over {MAX_ALIAS_CHARS} characters", settings)
            try:  # what it means must be parameters that work here, for one job
                (job,) = parse_prompt(f"x {parameters}", models=settings.installed_models, max_jobs=1)
            except PromptError as exc:
                raise self.error(f"`--{key}` can't mean that: {str(exc).removesuffix('.')}", settings) from None
            meaning = job.to_text().removeprefix("x").strip()
            if not meaning or job.text != "x":
                raise self.error(f"`--{key}` must mean parameters, like `--stylize 0`", settings)
            aliases[key] = meaning
        if len(aliases) > MAX_ALIASES:
            raise self.error(f"that makes {len(aliases)} aliases (the most is {MAX_ALIASES})", settings)
        return aliases

    def _parse_items(self, items: list[str], settings: Settings, guild: discord.Guild | None) -> Any:
        if self.kind == "loras":
            loras = []
            for item in items:
                lora = _find_model(item, list(settings.lora_sources))
                if lora is None:
                    raise self.error(f"`{_short(item)}` is not one of the bot's LoRAs", settings)
                loras.append(lora)
            return _unique(loras)
        if self.kind == "models":
            models = []
            for item in items:
                model = _find_model(item, settings.installed_models)
                if model is None:
                    raise self.error(f"`{_short(item)}` is not installed", settings)
                models.append(model)
            return _unique(models)
        if self.kind == "channels":
            found = []
            for item in items:
                channel = _find_channel(item, guild)
                if channel is None:
                    raise self.error(f"I can't find the channel `{_short(item)}` on this server", settings)
                found.append(channel)
            return _unique(found)
        if self.kind == "members":
            found = []
            for item in items:
                match = _MEMBER.fullmatch(item)
                member = int(match[1] or match[2]) if match else _find_member(item, guild)
                if member is None:
                    problem = f"I can't find the member `{_short(item)}` (mention them, or give their id)"
                    raise self.error(problem, settings)
                found.append(member)
            return _unique(found)
        if self.kind == "words":
            words = []
            for item in items:
                if len(item) > MAX_WORD_CHARS:
                    raise self.error(f"`{_short(item)}` is over {MAX_WORD_CHARS} characters", settings)
                if not is_pattern(item):
                    item = " ".join(item.lower().split())
                try:
                    compile_rule(item)
                except PatternRefused as exc:
                    raise self.error(f"`{_short(item)}` can't be used: {exc}", settings) from None
                words.append(item)
            return _unique(words)
        if self.kind == "role_quotas":
            quotas: dict[str, int] = {}
            for item in items:
                role_text, sep, number = item.rpartition(":")
                if not sep:
                    raise self.error(f"`{_short(item)}` needs a quota, like `@Patrons: 100`", settings)
                role = _find_role(role_text.strip(), guild)
                if role is None:
                    raise self.error(f"I can't find the role `{_short(role_text.strip())}`", settings)
                try:
                    quota = int(number.strip())
                except ValueError:
                    raise self.error(f"`{_short(number.strip())}` is not a whole number", settings) from None
                if not 0 <= quota <= MAX_QUOTA:
                    raise self.error(f"{quota} is out of range", settings)
                quotas[str(role)] = quota
            return quotas
        raise AssertionError(self.kind)

    def error(self, problem: str, settings: Settings) -> ConfigError:
        return ConfigError(f"`{self.name}`: {problem}. It takes {self.allowed(settings)}.")

    # -- the value in effect ----------------------------------------------------------------

    def effective(self, stored: Any, settings: Settings) -> Any:
        """The stored value, or the default; values the bot no longer allows fall back or are clamped."""
        default = self.default_for(settings)
        if stored is _MISSING or stored is None and self.kind != "role":
            return default
        if self.kind == "int":
            if self.zero_means and int(stored) == 0:  # e.g. max_image_size's default: set per model
                return 0
            low, high = self.bounds(settings)
            return min(max(int(stored), low), high)
        if self.kind == "model":
            return stored if stored in settings.installed_models else default
        if self.kind == "models":
            return [m for m in stored if m in settings.installed_models]
        if self.kind == "loras":
            return [lora for lora in stored if lora in settings.lora_sources or lora == NO_LORAS]
        return stored

    def show(self, value: Any, settings: Settings) -> str:
        if self.kind == "bool":
            return "on" if value else "off"
        if self.kind == "int":
            return self.zero_means if value == 0 and self.zero_means else f"{value:,}"
        if self.kind in ("aspect", "model"):
            return f"`{value}`"
        if self.kind == "models":
            return ", ".join(f"`{m}`" for m in value) if value else "all installed"
        if self.kind == "loras":
            if value == [NO_LORAS]:
                return "none"
            return ", ".join(f"`{lora}`" for lora in value) if value else "all the bot's"
        if self.kind == "channels":
            return ", ".join(f"<#{c}>" for c in value) if value else "everywhere"
        if self.kind == "role":
            return f"<@&{value}>" if value else "none (Manage Server only)"
        if self.kind == "members":
            return ", ".join(f"<@{m}>" for m in value) if value else "none"
        if self.kind == "role_quotas":
            return ", ".join(f"<@&{r}>: {q or 'no quota'}" for r, q in value.items()) if value else "none"
        if self.kind == "words":
            return ", ".join(f"`{w}`" for w in value) if value else "none"
        if self.kind == "aliases":
            return "; ".join(f"`--{key}` = `{meaning}`" for key, meaning in value.items()) if value else "none"
        raise AssertionError(self.kind)


KEYS: dict[str, Key] = {
    key.name: key
    for key in (
        Key(
            name="channels",
            kind="channels",
            default=[],
            description="Channels where the bot draws; elsewhere members get a pointer to them.",
        ),
        Key(
            name="admin_role",
            kind="role",
            default=None,
            description="A role that may use /config, besides members with Manage Server.",
        ),
        Key(
            name="banned_members",
            kind="members",
            default=[],
            description="Members who may not use the bot on this server.",
        ),
        Key(
            name="default_model",
            kind="model",
            default=lambda s: s.model,
            description="The model a prompt without --model uses.",
        ),
        Key(name="allowed_models", kind="models", default=[], description="The models --model may pick."),
        Key(
            name="loras",
            kind="loras",
            default=[],
            description="The bot's LoRAs prompts may name (--lora, <lora:…>); `none` turns LoRAs and /tune off here.",
        ),
        Key(
            name="default_aspect",
            kind="aspect",
            default="1:1",
            description="The aspect ratio when neither the prompt nor /settings sets one.",
        ),
        Key(
            name="max_steps",
            kind="int",
            default=lambda s: s.max_steps,
            low=1,
            high=lambda s: s.max_steps,
            description="The most denoising steps a job may run (--quality is capped to it).",
        ),
        Key(
            name="max_image_size",
            kind="int",
            default=0,  # per model: what its largest aspect ratio needs, upscaled
            low=IMAGE_SIZE_RANGE[0],
            high=IMAGE_SIZE_RANGE[1],
            zero_means=f"{MODEL_SIZE_FACTOR}× the model's tile size",
            description="Longest side of an image in pixels; larger grids are scaled down, larger upscales refused.",
        ),
        Key(
            name="max_running_per_user",
            kind="int",
            default=lambda s: s.max_running_per_user,
            low=1,
            high=lambda s: s.max_running_per_user,
            description="Jobs one member may have drawing at once.",
        ),
        Key(
            name="max_queued_per_user",
            kind="int",
            default=lambda s: s.max_queued_per_user,
            low=1,
            high=lambda s: max(1, s.max_queued_per_user),
            description="Jobs one member may have waiting.",
        ),
        Key(
            name="daily_quota",
            kind="int",
            default=0,
            low=0,
            high=MAX_QUOTA,
            zero_means="no quota",
            description="Jobs a member may start per day (UTC) on this server.",
        ),
        Key(
            name="role_quotas",
            kind="role_quotas",
            default={},
            description="Daily quotas by role, instead of daily_quota; the highest among a member's roles wins.",
        ),
        Key(
            name="fast_hours",
            kind="int",
            default=FAST_HOURS_DEFAULT,
            low=0,
            high=MAX_FAST_HOURS,
            zero_means="no limit",
            description="Device hours of Fast jobs a member gets per month (UTC); after that their jobs relax.",
        ),
        Key(
            name="remix_allowed",
            kind="bool",
            default=True,
            description="Whether Remix may edit the prompt before V and 🔄.",
        ),
        Key(name="repeat_allowed", kind="bool", default=True, description="Whether prompts may use --repeat."),
        Key(
            name="max_style_references",
            kind="int",
            default=MAX_STYLE_REFERENCES,
            low=0,
            high=MAX_STYLE_REFERENCES,
            zero_means="--sref is off",
            description="Style references (--sref) one prompt may name.",
        ),
        Key(
            name="max_moodboards",
            kind="int",
            default=10,
            low=0,
            high=100,
            zero_means="/moodboard create is off",
            description="Moodboards one member may have.",
        ),
        Key(
            name="moodboard_pictures",
            kind="int",
            default=20,
            low=1,
            high=100,
            description="Pictures one moodboard may hold (all of them steer an --sref mb:NAME).",
        ),
        Key(
            name="profile_pictures",
            kind="int",
            default=10,
            low=0,
            high=50,
            zero_means="--p is off",
            description="A member's most recent ❤️ pictures that `--p` freezes into their profile.",
        ),
        Key(
            name="aliases",
            kind="aliases",
            default={},
            description="Midjourney's `--v 7`, `--niji`, `--raw`, `--exp`, `--weird`, `--hd`… as this server's "
            "models and settings.",
        ),
        Key(
            name="banned_words",
            kind="words",
            default=[],
            description="Words (any case) and /regex/ patterns a prompt may not contain.",
        ),
        Key(
            name="safety_checker",
            kind="bool",
            default=False,
            description="Run the model's safety checker on every image.",
        ),
        Key(
            name="spoiler_flagged",
            kind="bool",
            default=True,
            description="Post images the safety checker flagged as spoilers.",
        ),
    )
}


def markdown_table(settings: Settings) -> str:
    """The `/config` table in docs/operators.md, written from KEYS (tests/test_docs.py keeps them equal).

    Defaults and ranges that follow the bot's own settings are shown as `settings` makes them.
    """
    lines = ["| key | what it sets | default | allowed |", "|---|---|---|---|"]
    for key in KEYS.values():
        default = key.show(key.default_for(settings), settings)
        lines.append(f"| `{key.name}` | {key.description} | {default} | {key.allowed(settings)} |")
    return "\n".join(lines) + "\n"


class GuildConfig:
    """One server's settings as they apply now: `config["max_steps"]`."""

    def __init__(self, guild_id: int | None, stored: Mapping[str, Any], settings: Settings) -> None:
        self.guild_id = guild_id
        self.settings = settings
        self._stored = {k: v for k, v in stored.items() if k in KEYS}
        self._values = {name: key.effective(self._stored.get(name, _MISSING), settings) for name, key in KEYS.items()}
        # The bot's own BANNED_WORDS apply everywhere, on top of the server's.
        self._banned = BannedRules.compile([*settings.banned_words, *self._values["banned_words"]])

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

    def is_set(self, name: str) -> bool:
        return name in self._stored

    def stored(self, name: str) -> Any:
        return self._stored.get(name)

    @property
    def allowed_models(self) -> list[str]:
        return self["allowed_models"] or list(self.settings.installed_models)

    @property
    def loras_off(self) -> bool:
        """`/config loras none`: no LoRA and no /tune style on this server."""
        return self["loras"] == [NO_LORAS]

    @property
    def allowed_loras(self) -> dict[str, str]:
        """The bot's LoRAs prompts may name here: name -> file."""
        chosen = self["loras"]
        sources = self.settings.lora_sources
        return {name: path for name, path in sources.items() if not chosen or name in chosen}

    @property
    def default_model(self) -> str:
        """The default model, or the first allowed one if an admin has since disallowed it."""
        allowed = self.allowed_models
        return self["default_model"] if self["default_model"] in allowed else allowed[0]

    def banned_match(self, text: str) -> str | None:
        """The banned word or /pattern/ that `text` contains, if any (linear time, look-alikes folded)."""
        return self._banned.match(text)


class GuildConfigs:
    """Every server's GuildConfig, read once and dropped when an admin changes a key."""

    def __init__(self, store: Store, settings: Settings) -> None:
        self.store = store
        self.settings = settings
        self._cache: dict[int, GuildConfig] = {}

    async def get(self, guild_id: int | None) -> GuildConfig:
        if guild_id is None:  # DMs: the bot's own settings
            return GuildConfig(None, {}, self.settings)
        config = self._cache.get(guild_id)
        if config is None:
            config = GuildConfig(guild_id, await self.store.guild_settings(guild_id), self.settings)
            self._cache[guild_id] = config
        return config

    async def set(self, guild_id: int, name: str, value: Any, *, by: int) -> Any:
        """Store a parsed value (None: back to the default); returns the old stored value."""
        try:
            return await self.store.change_guild_setting(guild_id, name, value, by)
        finally:
            self._cache.pop(guild_id, None)

    async def history(self, guild_id: int, limit: int = 20) -> list[ConfigChange]:
        return await self.store.config_history(guild_id, limit)


# -- helpers ----------------------------------------------------------------------------------


def _unique(items: Iterable[Any]) -> list[Any]:
    return list(dict.fromkeys(items))


def _merge(current: Any, new: Any) -> Any:
    if isinstance(new, dict):
        return {**(current or {}), **new}
    return _unique([*(current or []), *new])


def _remove(current: Any, gone: Any) -> Any:
    if isinstance(gone, dict):
        return {k: v for k, v in (current or {}).items() if k not in gone}
    return [item for item in current or [] if item not in gone]


def _short(text: str, limit: int = 60) -> str:
    text = text.replace("`", "'")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _alias_name(written: str) -> str:
    """`--V 7` or `v  7` -> `v 7`: an alias as stored (`bot.prompt.alias_key`)."""
    name, _, value = written.strip().partition(" ")
    return alias_key(name, value.strip() or None)


def _raise(exc: Exception) -> Any:
    raise exc


def _find_model(text: str, installed: Sequence[str]) -> str | None:
    text = text.strip().strip("`")
    return next((m for m in installed if m.lower() == text.lower()), None)


def _find_channel(text: str, guild: discord.Guild | None) -> int | None:
    match = _CHANNEL.fullmatch(text)
    if match:
        channel_id = int(match[1] or match[2])
        return channel_id if guild is None or guild.get_channel_or_thread(channel_id) is not None else None
    name = text.lstrip("#").strip().lower()
    for channel in guild.channels if guild is not None else []:
        if channel.name.lower() == name:
            return channel.id
    return None


def _find_role(text: str, guild: discord.Guild | None) -> int | None:
    match = _ROLE.fullmatch(text)
    if match:
        role_id = int(match[1] or match[2])
        return role_id if guild is None or guild.get_role(role_id) is not None else None
    name = text.lstrip("@").strip().lower()
    for role in guild.roles if guild is not None else []:
        if role.name.lower() == name:
            return role.id
    return None


def _find_member(text: str, guild: discord.Guild | None) -> int | None:
    member = guild.get_member_named(text.lstrip("@")) if guild is not None else None
    return member.id if member is not None else None
