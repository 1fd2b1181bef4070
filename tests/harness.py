"""Running the real bot against the fake Discord, for end-to-end tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from bot.client import DreamGrid
from bot.settings import Settings
from bot.store import Store
from engine.fake import FakeEngine
from engine.requests import Engine
from tests.fakediscord import FakeDiscord, Interaction, Message


def bot_settings(data_dir: Path, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "discord_token": "fake-token",
        "data_dir": data_dir,
        "model": "fake",
        "progress_interval_s": 0.5,
        "steps": 8,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@asynccontextmanager
async def running_bot(
    fake: FakeDiscord, data_dir: Path, *, engine: Engine | None = None, **settings: Any
) -> AsyncIterator[DreamGrid]:
    """The bot, connected and ready, with its own database under `data_dir` (kept across restarts)."""
    config = bot_settings(data_dir, **settings)
    engine = engine or FakeEngine(models=config.installed_models, step_delay_s=0.1)
    async with Store.open(config.database_path) as store:
        bot = DreamGrid(settings=config, store=store, engine=engine)
        async with fake.running(bot) as ready:
            yield ready


def shows_result(message: Message) -> bool:
    """The message shows a finished job: the result embed, no progress or waiting line."""
    return bool(message.embeds) and bool(message.attachments) and "%)" not in message.content


async def result_of(ix: Interaction, timeout: float = 15) -> Message:
    """Acknowledge-check `ix` and wait for the job it started to show its result."""
    await ix.ack()
    return ix.original if shows_result(ix.original) else await ix.wait_for_edit(shows_result, timeout=timeout)


async def eventually(fetch, check, timeout: float = 5.0):
    """Poll the bot's own state (its database) until `check` holds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not check(value := await fetch()):
        assert loop.time() < deadline, f"timed out; last value: {value!r}"
        await asyncio.sleep(0.05)
    return value


async def config_shown(fake: FakeDiscord, user: Any) -> list[dict[str, Any]]:
    """/config show's embeds, in order: the settings come in pages (Discord's 25 fields a message)."""
    from bot.cogs.admin import SHOW_FIELDS_PER_EMBED
    from bot.guild_config import KEYS

    pages = -(-(len(KEYS) + 2) // SHOW_FIELDS_PER_EMBED)  # the keys, then storage and models
    ix = await fake.slash("config show", user=user)
    assert (await ix.ack()).ephemeral
    shown = lambda: [m.embed for m in ix.messages if m.embeds]  # noqa: E731
    await fake.wait_for(lambda: len(shown()) >= pages or None, what="every page of /config show")
    return shown()
