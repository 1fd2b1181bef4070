"""A loopback fake Discord for end-to-end tests with the real discord.py client.

In-process: the `fake_discord` fixture starts the server and points discord.py at it.
As a subprocess: give the bot `fake.env()`; the bot honours two variables by calling the helper
below (copied into bot/ code, since bot/ must not import tests/):

    DISCORD_API_BASE=http://127.0.0.1:PORT/api/v10
    DISCORD_GATEWAY_URL=ws://127.0.0.1:PORT/gateway
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

from .models import Attachment, Channel, Guild, Member, Message, Overwrite, P, Role, User
from .records import Callback, Interaction, RequestRecord, Upload, Violation
from .server import DiscordError, FakeDiscord, Outage


def point_discord_py_at(api_base: str | None = None, gateway: str | None = None) -> None:
    """Send discord.py's REST calls to `api_base` and its gateway connection to `gateway`.

    Defaults come from DISCORD_API_BASE / DISCORD_GATEWAY_URL; unset means real Discord (no change).
    discord.py 2.x builds every REST URL (webhooks included) from `Route.BASE` and, for a non-sharded
    Client, connects to `DiscordWebSocket.DEFAULT_GATEWAY` without calling GET /gateway/bot.
    """
    import discord.gateway
    import discord.http
    import yarl

    api_base = api_base or os.environ.get("DISCORD_API_BASE")
    gateway = gateway or os.environ.get("DISCORD_GATEWAY_URL")
    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


@contextlib.contextmanager
def discord_py_pointed_at(fake: FakeDiscord) -> Iterator[None]:
    """point_discord_py_at(fake) for the duration of the block, then restore discord.py's defaults."""
    import discord.gateway
    import discord.http

    saved = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
    point_discord_py_at(fake.api_base, fake.gateway_url)
    try:
        yield
    finally:
        discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = saved


__all__ = [
    "P",
    "Attachment",
    "Callback",
    "Channel",
    "DiscordError",
    "FakeDiscord",
    "Guild",
    "Interaction",
    "Member",
    "Outage",
    "Overwrite",
    "Message",
    "RequestRecord",
    "Role",
    "Upload",
    "User",
    "Violation",
    "discord_py_pointed_at",
    "point_discord_py_at",
]
