"""The discord.py client: wires the cogs, the command tree's error handler and the scheduler."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging

import discord
from discord.ext import commands

from bot.delivery import Delivery
from bot.errors import on_app_command_error
from bot.guild_config import GuildConfigs
from bot.member_pictures import PictureReader
from bot.metrics import Metrics, MetricsServer
from bot.retention import ImageRetention, RetentionPolicy
from bot.scheduler import Scheduler
from bot.settings import Settings
from bot.store import Store
from bot.ui import JobViews
from engine.requests import Engine

log = logging.getLogger(__name__)

ADMISSIONS_AT_ONCE = 4
EXTENSIONS = (
    "bot.cogs.imagine",
    "bot.cogs.images",
    "bot.cogs.blend",
    "bot.cogs.describe",
    "bot.cogs.tune",
    "bot.cogs.edit",
    "bot.cogs.account",
    "bot.cogs.queue",
    "bot.cogs.admin",
    "bot.cogs.moodboard",
    "bot.cogs.profile",
)


class DreamGrid(commands.Bot):
    def __init__(self, *, settings: Settings, store: Store, engine: Engine, run_jobs: bool = True) -> None:
        # dreamgrid never joins voice: discord.py's warnings about missing voice libraries tell an operator nothing.
        discord.VoiceClient.warn_nacl = discord.VoiceClient.warn_dave = False
        # No privileged intents: slash commands and buttons arrive as interactions.
        intents = discord.Intents.none()
        intents.guilds = True
        metrics = Metrics(settings.installed_models)
        super().__init__(
            command_prefix=commands.when_mentioned,
            intents=intents,
            help_command=None,
            allowed_mentions=discord.AllowedMentions.none(),
            http_trace=metrics.discord_trace(),
        )
        self.metrics = metrics  # counted always; served on METRICS_PORT when it is set
        self.gateway_connected = False
        self.metrics_server = (
            MetricsServer(self, settings.metrics_host, settings.metrics_port) if settings.metrics_port else None
        )
        self.settings = settings
        self.store = store
        self.engine = engine
        self.guild_configs = GuildConfigs(store, settings)  # /config values, cached per server
        self.run_jobs = run_jobs
        # Work after an acknowledgement (database, "Waiting to start") takes turns, a few at a time, so a
        # burst of commands can't crowd out the next ones' acknowledgements on the event loop.
        self.admission = asyncio.Semaphore(ADMISSIONS_AT_ONCE)
        # Members' pictures are decoded in bounded child processes, a few at a time (bot.member_pictures).
        self.pictures = PictureReader()
        # Deletes old images by IMAGE_RETENTION_DAYS / IMAGE_STORE_MAX_GB; job rows stay, so they can be redrawn.
        self.retention = ImageRetention(store, settings.data_dir, RetentionPolicy.from_settings(settings))
        # The buttons under a job's message: bot.cogs.imagine and bot.cogs.queue install the builders.
        self.views = JobViews()
        self.scheduler = Scheduler(
            store=store,
            engine=engine,
            settings=settings,
            delivery=Delivery(self),
            views=self.views,
            retention=self.retention,
            metrics=self.metrics,
        )

    async def setup_hook(self) -> None:
        self.tree.error(on_app_command_error)  # sets tree.on_error, after checking the handler's signature
        for extension in EXTENSIONS:
            try:
                await self.load_extension(extension)
            except Exception:
                log.exception("failed to load extension %s", extension)
        if self.metrics_server is not None:
            await self.metrics_server.start()
        if self.run_jobs:
            try:
                await self.sync_commands_if_changed()
            except discord.HTTPException:
                # Commands registered earlier keep working; a later start or `dreamgrid sync` retries.
                log.exception("could not register the slash commands with Discord")
            await self.scheduler.start()
            self.retention.start()

    async def close(self) -> None:
        await self.retention.stop()
        await self.scheduler.stop()
        if self.metrics_server is not None:
            await self.metrics_server.stop()
        await super().close()

    # For /healthz: whether the gateway is connected now (discord.py reconnects by itself).
    async def on_connect(self) -> None:
        self.gateway_connected = True

    async def on_resumed(self) -> None:
        self.gateway_connected = True

    async def on_disconnect(self) -> None:
        self.gateway_connected = False

    def commands_fingerprint(self) -> str:
        payload = [command.to_dict(self.tree) for command in self.tree.get_commands()]
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()

    async def sync_commands_if_changed(self) -> None:
        """Register the slash commands globally when they differ from what was last synced.

        Syncing on every start would hit Discord's daily limit for command creates; a
        fingerprint of the definitions in the database makes a restart free.
        """
        fingerprint = self.commands_fingerprint()
        key = f"commands_hash:{self.application_id}"
        if await self.store.get_meta(key) == fingerprint:
            return
        synced = await self.tree.sync()
        await self.store.set_meta(key, fingerprint)
        log.info("registered %d slash commands", len(synced))
