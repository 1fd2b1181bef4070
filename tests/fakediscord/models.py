"""The fake's world: users, guilds, roles, channels, messages. Plain objects that render to payloads."""

from __future__ import annotations

import copy
import datetime as dt
import io
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

DISCORD_EPOCH_MS = 1420070400000
_counter = itertools.count()


def snowflake() -> int:
    return ((int(time.time() * 1000) - DISCORD_EPOCH_MS) << 22) | (next(_counter) & 0x3FFFFF)


def iso_now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()


class P:
    """Permission bits used in tests (names as in discord.Permissions)."""

    CREATE_INSTANT_INVITE = 1 << 0
    ADMINISTRATOR = 1 << 3
    MANAGE_CHANNELS = 1 << 4
    MANAGE_GUILD = 1 << 5
    ADD_REACTIONS = 1 << 6
    VIEW_CHANNEL = 1 << 10
    SEND_MESSAGES = 1 << 11
    MANAGE_MESSAGES = 1 << 13
    EMBED_LINKS = 1 << 14
    ATTACH_FILES = 1 << 15
    READ_MESSAGE_HISTORY = 1 << 16
    USE_EXTERNAL_EMOJIS = 1 << 18
    USE_APPLICATION_COMMANDS = 1 << 31
    SEND_MESSAGES_IN_THREADS = 1 << 38
    ALL = (1 << 51) - 1

    EVERYONE = (
        CREATE_INSTANT_INVITE
        | ADD_REACTIONS
        | VIEW_CHANNEL
        | SEND_MESSAGES
        | EMBED_LINKS
        | ATTACH_FILES
        | READ_MESSAGE_HISTORY
        | USE_EXTERNAL_EMOJIS
        | USE_APPLICATION_COMMANDS
        | SEND_MESSAGES_IN_THREADS
    )


@dataclass(eq=False)
class User:
    id: int
    username: str
    global_name: str | None = None
    bot: bool = False
    locale: str = "en-US"

    @property
    def mention(self) -> str:
        return f"<@{self.id}>"

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "username": self.username,
            "global_name": self.global_name,
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if self.bot:
            d["bot"] = True
        return d


@dataclass(eq=False)
class Role:
    id: int
    name: str
    permissions: int = 0
    position: int = 0
    color: int = 0
    managed: bool = False

    def to_payload(self) -> dict[str, Any]:
        return {
            "id": str(self.id),
            "name": self.name,
            "permissions": str(self.permissions),
            "position": self.position,
            "color": self.color,
            "colors": {"primary_color": self.color, "secondary_color": None, "tertiary_color": None},
            "hoist": False,
            "managed": self.managed,
            "mentionable": False,
            "icon": None,
            "unicode_emoji": None,
            "flags": 0,
            "description": None,
        }


@dataclass(frozen=True)
class Overwrite:
    """A channel's permission overwrite for a role (type 0) or a member (type 1), as Discord sends it."""

    id: int
    type: int
    allow: int = 0
    deny: int = 0

    def to_payload(self) -> dict[str, Any]:
        return {"id": str(self.id), "type": self.type, "allow": str(self.allow), "deny": str(self.deny)}


@dataclass(eq=False)
class Channel:
    id: int
    name: str | None
    type: int = 0  # 0 text, 1 DM, 2 voice, 4 category, 5 news, 11 public thread
    guild: Guild | None = None
    recipient: User | None = None  # for DMs
    nsfw: bool = False
    position: int = 0
    overwrites: list[Overwrite] = field(default_factory=list)

    @property
    def is_dm(self) -> bool:
        return self.type == 1

    @property
    def mention(self) -> str:
        return f"<#{self.id}>"

    def to_payload(self, *, with_guild_id: bool = True) -> dict[str, Any]:
        if self.is_dm:
            assert self.recipient is not None
            return {
                "id": str(self.id),
                "type": 1,
                "last_message_id": None,
                "flags": 0,
                "recipients": [self.recipient.to_payload()],
                "recipient_flags": 0,
            }
        d: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "name": self.name,
            "position": self.position,
            "permission_overwrites": [o.to_payload() for o in self.overwrites],
            "nsfw": self.nsfw,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
            "flags": 0,
        }
        if with_guild_id and self.guild is not None:
            d["guild_id"] = str(self.guild.id)
        return d


def sum_bits(values: Any) -> int:
    bits = 0
    for value in values:
        bits |= value
    return bits


@dataclass(eq=False)
class Member:
    user: User
    guild: Guild
    roles: list[Role] = field(default_factory=list)
    nick: str | None = None
    joined_at: str = field(default_factory=iso_now)

    @property
    def id(self) -> int:
        return self.user.id

    @property
    def permissions(self) -> int:
        """Guild-level permissions (no channel overwrites in the fake)."""
        if self.guild.owner_id == self.user.id:
            return P.ALL
        perms = self.guild.everyone.permissions
        for r in self.roles:
            perms |= r.permissions
        return P.ALL if perms & P.ADMINISTRATOR else perms

    def permissions_in(self, channel: Channel) -> int:
        """What this member may do in `channel`: Discord's order — @everyone's overwrite, then the
        roles' (denies before allows), then the member's own."""
        perms = self.permissions
        if perms == P.ALL:
            return perms
        by_id = {o.id: o for o in channel.overwrites}
        if everyone := by_id.get(self.guild.id):
            perms = (perms & ~everyone.deny) | everyone.allow
        roles = [by_id[r.id] for r in self.roles if r.id in by_id]
        perms &= ~sum_bits(o.deny for o in roles)
        perms |= sum_bits(o.allow for o in roles)
        if own := by_id.get(self.user.id):
            perms = (perms & ~own.deny) | own.allow
        return perms

    def to_payload(self, *, with_user: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {
            "roles": [str(r.id) for r in self.roles],
            "nick": self.nick,
            "avatar": None,
            "banner": None,
            "joined_at": self.joined_at,
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "pending": False,
            "flags": 0,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }
        if with_user:
            d["user"] = self.user.to_payload()
        return d


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner_id: int
    everyone: Role = None  # type: ignore[assignment]  # set in __post_init__
    roles: list[Role] = field(default_factory=list)
    channels: list[Channel] = field(default_factory=list)
    members: dict[int, Member] = field(default_factory=dict)
    locale: str = "en-US"

    def __post_init__(self) -> None:
        if self.everyone is None:
            self.everyone = Role(id=self.id, name="@everyone", permissions=P.EVERYONE)
            self.roles.insert(0, self.everyone)

    def member(self, user: User | int) -> Member:
        uid = user if isinstance(user, int) else user.id
        try:
            return self.members[uid]
        except KeyError:
            raise KeyError(f"user {uid} is not a member of guild {self.name!r}") from None

    def to_partial(self) -> dict[str, Any]:
        return {"id": str(self.id), "locale": self.locale, "features": []}

    def to_payload(self) -> dict[str, Any]:
        """A GUILD_CREATE body."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": self.locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
            "safety_alerts_channel_id": None,
            "features": [],
            "emojis": [],
            "stickers": [],
            "max_members": 500000,
            "max_video_channel_users": 25,
            "roles": [r.to_payload() for r in self.roles],
            "joined_at": iso_now(),
            "large": False,
            "unavailable": False,
            "member_count": len(self.members),
            "voice_states": [],
            "presences": [],
            "threads": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "lazy": True,
            "members": [m.to_payload() for m in self.members.values()],
            "channels": [c.to_payload(with_guild_id=False) for c in self.channels],
        }


@dataclass(eq=False)
class Attachment:
    """A stored upload. `data` holds the bytes; `image()` opens it with Pillow."""

    id: int
    filename: str
    data: bytes
    url: str
    content_type: str | None = None
    description: str | None = None
    ephemeral: bool = False
    declared_size: int | None = None  # what Discord says the file weighs, when a test wants it to differ
    _size: tuple[int, ...] | None = field(default=None, repr=False)

    @property
    def size(self) -> int:
        return len(self.data) if self.declared_size is None else self.declared_size

    def image(self):
        from PIL import Image

        img = Image.open(io.BytesIO(self.data))
        img.load()
        return img

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.url,
            "content_type": self.content_type,
            "description": self.description,
        }
        if self.ephemeral:
            d["ephemeral"] = True
        if self._size is None:
            from PIL import Image

            try:  # the header's size, as Discord reports it: a hostile upload's pixels are never decoded here
                with Image.open(io.BytesIO(self.data)) as header:
                    self._size = header.size
            except Exception:  # not an image
                self._size = ()
        if self._size:
            d["width"], d["height"] = self._size
        return {k: v for k, v in d.items() if v is not None}


@dataclass(eq=False)
class Message:
    """A message as the fake stores it. Edits replace fields in place; `history` keeps old versions."""

    id: int
    channel: Channel
    author: User
    content: str = ""
    embeds: list[dict[str, Any]] = field(default_factory=list)
    components: list[dict[str, Any]] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)
    flags: int = 0
    type: int = 0
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: dict[str, Any] | None = None
    timestamp: str = field(default_factory=iso_now)
    edited_timestamp: str | None = None
    deleted: bool = False
    reactions: dict[str, set[int]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & 64)

    @property
    def loading(self) -> bool:
        """True while this is a deferred "Bot is thinking..." placeholder."""
        return bool(self.flags & 128)

    @property
    def edits(self) -> int:
        return len(self.history)

    @property
    def embed(self) -> dict[str, Any] | None:
        return self.embeds[0] if self.embeds else None

    @property
    def buttons(self) -> list[dict[str, Any]]:
        """Every button/select in the message, flattened, in order."""
        from .rules import _walk

        return [c for c in _walk(self.components) if c.get("type") in (2, 3, 5, 6, 7, 8)]

    @property
    def labels(self) -> list[str | None]:
        return [b.get("label") for b in self.buttons]

    @property
    def custom_ids(self) -> list[str]:
        return [b["custom_id"] for b in self.buttons if "custom_id" in b]

    def snapshot(self) -> dict[str, Any]:
        return copy.deepcopy(
            {
                "content": self.content,
                "embeds": self.embeds,
                "components": self.components,
                "attachments": [a.filename for a in self.attachments],
                "flags": self.flags,
            }
        )

    def to_payload(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(self.id),
            "channel_id": str(self.channel.id),
            "author": self.author.to_payload(),
            "content": self.content,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "tts": False,
            "mention_everyone": False,
            "mentions": [],
            "mention_roles": [],
            "attachments": [a.to_payload() for a in self.attachments],
            "embeds": self.embeds,
            "pinned": False,
            "type": self.type,
            "flags": self.flags,
            "components": self.components,
        }
        if self.channel.guild is not None:
            d["guild_id"] = str(self.channel.guild.id)
        if self.webhook_id is not None:
            d["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            d["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            d["interaction_metadata"] = self.interaction_metadata
        if self.reactions:
            d["reactions"] = [
                {
                    "emoji": {"id": None, "name": e},
                    "count": len(users),
                    "me": False,
                    "count_details": {"burst": 0, "normal": len(users)},
                    "burst_colors": [],
                    "me_burst": False,
                    "burst_me": False,
                    "burst_count": 0,
                }
                for e, users in self.reactions.items()
            ]
        return d

    def __repr__(self) -> str:
        return (
            f"<Message id={self.id} channel={self.channel.name or self.channel.id} content={self.content[:40]!r}"
            f" embeds={len(self.embeds)} files={[a.filename for a in self.attachments]} flags={self.flags}>"
        )
