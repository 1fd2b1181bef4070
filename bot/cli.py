"""The `dreamgrid` command: run the bot, render locally, manage the database and Discord app."""

from __future__ import annotations

import argparse
import asyncio
import base64
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bot.settings import Settings, SettingsError, load_settings
from engine.argtypes import positive
from engine.params import PARAMETERS
from engine.requests import Engine, RenderError

if TYPE_CHECKING:
    from bot.store import Store

log = logging.getLogger("dreamgrid")

# View Channel, Send Messages, Send Messages in Threads, Embed Links, Attach Files,
# Read Message History, Add Reactions: what posting grids and the ✉️ reaction need.
INVITE_PERMISSIONS = (1 << 10) | (1 << 11) | (1 << 38) | (1 << 14) | (1 << 15) | (1 << 16) | (1 << 6)


def point_discord_py_at(api_base: str | None, gateway_url: str | None) -> None:
    """Send discord.py's REST and gateway traffic elsewhere (a proxy, or the tests' fake Discord)."""
    import discord
    import yarl

    if api_base:
        discord.http.Route.BASE = api_base.rstrip("/")
    if gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway_url)


@asynccontextmanager
async def open_engine(settings: Settings) -> AsyncIterator[Engine]:
    if settings.engine == "fake":
        from engine.fake import FakeEngine

        async with FakeEngine(models=settings.installed_models, step_delay_s=settings.fake_step_delay_s) as fake:
            yield fake
        return
    options = engine_options(settings)
    if settings.engine == "ray":
        try:
            from engine.ray_engine import RayEngine
        except ImportError as exc:
            raise RenderError(f"Ray Serve is not installed here: pip install -e '.[ray]' ({exc})") from None

        async with RayEngine(
            **options,
            address=settings.ray_address,
            min_replicas=settings.ray_min_replicas,
            max_replicas=settings.ray_max_replicas,
            gpus_per_replica=settings.ray_gpus_per_replica,
            cpus_per_replica=settings.ray_cpus_per_replica,
            progress_interval_s=settings.progress_interval_s,
        ) as ray_engine:
            yield ray_engine
        return
    from engine.core import DiffusersEngine

    async with DiffusersEngine(**options) as engine:
        yield engine


def engine_options(settings: Settings) -> dict[str, Any]:
    """What either real engine (in-process, or in each Ray replica) is built from."""
    from engine.loading import MemorySettings
    from engine.optimize import Speedups
    from engine.video import VideoSettings

    speedups = Speedups(
        sdpa=settings.sdpa,
        channels_last=settings.channels_last,
        fuse_qkv=settings.fuse_qkv,
        compile=settings.compile,
        static_shapes=settings.static_shapes,
        vae_tiling=settings.vae_tiling,
    )
    return dict(
        model=settings.default_model,
        models=settings.installed_models,
        sources=settings.model_sources,
        schedulers=_schedulers(settings),
        device=settings.device,
        dtype=settings.dtype,
        batch_window_s=settings.batch_window_s,
        speedups=speedups,
        safety_checker=settings.safety_checker,
        describer=settings.describer,
        ip_adapter=settings.ip_adapter,
        ip_adapter_weight=settings.ip_adapter_weight,
        inpaint_unets={settings.default_model: settings.inpaint_model} if settings.inpaint_model else None,
        max_loaded_models=settings.max_loaded_models,
        memory_budget_gb=settings.model_memory_budget_gb,
        memory=MemorySettings(mode=settings.memory_mode, quantize=settings.quantize),
        single_file_configs=dict(settings.single_file_configs),
        video=VideoSettings(
            source=settings.video_model,
            memory=MemorySettings(mode=settings.video_memory_mode),
            vae_tiling=settings.video_vae_tiling,
            vae_slicing=settings.video_vae_slicing,
            frames=settings.video_frames,
        ),
    )


def _schedulers(settings: Settings) -> dict[str, str]:
    """MODEL_DEFAULTS' schedulers, by model name."""
    return {
        name: defaults.scheduler
        for name in settings.installed_models
        if (defaults := settings.defaults_for(name)).scheduler is not None
    }


@asynccontextmanager
async def open_store(settings: Settings) -> AsyncIterator[Store]:
    """The database, or one line saying why DATA_DIR can't hold it (read-only, no permission)."""
    import sqlite3

    from bot.disk import StorageError, check_writable
    from bot.store import Store

    try:
        await asyncio.to_thread(check_writable, settings.data_dir)
    except StorageError as exc:
        raise SettingsError(str(exc)) from None
    async with AsyncExitStack() as stack:
        try:
            store = await stack.enter_async_context(Store.open(settings.database_path))
        except (OSError, sqlite3.Error) as exc:
            raise SettingsError(f"DATA_DIR: cannot open the database {settings.database_path}: {exc}") from None
        yield store


async def run_bot(settings: Settings) -> None:
    import discord

    from bot.client import DreamGrid

    point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
    assert settings.discord_token is not None
    async with (
        open_store(settings) as store,
        open_engine(settings) as engine,
        DreamGrid(settings=settings, store=store, engine=engine) as bot,
    ):
        try:
            await bot.start(settings.discord_token.get_secret_value())
        except discord.LoginFailure:
            raise SettingsError(
                "Discord rejected DISCORD_TOKEN; copy the bot token again from the Developer Portal."
            ) from None


def _cmd_run(args: argparse.Namespace) -> int:
    import discord

    settings = load_settings()
    if settings.discord_token is None:
        raise SettingsError(
            "DISCORD_TOKEN is not set: put the bot token from the Discord Developer Portal in .env (see .env.example)."
        )
    import aiohttp

    discord.utils.setup_logging(level=getattr(logging, settings.log_level))
    try:
        asyncio.run(run_bot(settings))
    except KeyboardInterrupt:  # Ctrl+C is how an operator stops it
        pass
    except RenderError as exc:  # MODEL could not be loaded, or Ray could not run the replicas
        raise SettingsError(f"{'ENGINE=ray' if settings.engine == 'ray' else 'MODEL'}: {exc}") from None
    except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:  # not any OSError: DATA_DIR's are its own
        where = settings.discord_api_base or "discord.com"
        raise SettingsError(f"cannot reach Discord at {where}: {exc}") from None
    return 0


def _cmd_db_upgrade(args: argparse.Namespace) -> int:
    settings = load_settings()

    async def upgrade() -> int:
        async with open_store(settings) as store:
            return await store.version()

    version = asyncio.run(upgrade())
    print(f"{settings.database_path}: schema version {version}")
    return 0


def _existing_database(settings: Settings) -> Path:
    path = settings.database_path
    if not path.is_file():
        raise SettingsError(f"there is no database at {path} (DATA_DIR={settings.data_dir}); is DATA_DIR right?")
    return path


def _cmd_db_prune(args: argparse.Namespace) -> int:
    from bot.retention import RetentionPolicy, format_bytes, prune, storage_usage
    from bot.store import Store

    settings = load_settings()
    database = _existing_database(settings)
    policy = RetentionPolicy.from_settings(settings)
    if args.days is not None or args.max_gb is not None:
        policy = RetentionPolicy(
            args.days if args.days is not None else policy.max_age_days,
            int(args.max_gb * 1e9) if args.max_gb is not None else policy.max_bytes,
        )
    if not policy.enabled:
        raise SettingsError(
            "nothing to prune by: set IMAGE_RETENTION_DAYS or IMAGE_STORE_MAX_GB, or pass --days or --max-gb."
        )

    async def run() -> str:
        async with Store.open(database) as store:
            report = await prune(store, settings.data_dir, policy, dry_run=args.dry_run)
        usage = await storage_usage(settings.data_dir)
        oldest = f", oldest image from {usage.oldest_image:%Y-%m-%d}" if usage.oldest_image else ""
        return f"{report.summary()} ({policy.describe()}); {format_bytes(usage.free_bytes)} free on disk{oldest}"

    print(asyncio.run(run()))
    return 0


def _cmd_db_backup(args: argparse.Namespace) -> int:
    import sqlite3

    from bot.backup import backup_database, backup_path, describe

    settings = load_settings()
    database = _existing_database(settings)
    destination = backup_path(args.path)
    if destination.exists():
        raise SettingsError(f"{destination} already exists; give the backup a new name, or a folder.")
    if not destination.parent.is_dir():
        raise SettingsError(f"there is no folder {destination.parent} to write the backup in.")
    if destination.resolve() == database.resolve():
        raise SettingsError("the backup must not overwrite the database itself.")
    try:
        backup_database(database, destination)
    except FileExistsError:  # written meanwhile by someone else: theirs is kept, ours discarded
        raise SettingsError(f"{destination} already exists; give the backup a new name, or a folder.") from None
    except (sqlite3.Error, OSError) as exc:
        raise SettingsError(f"backup failed: {exc}") from None
    print(f"backed up {database} to {destination} ({describe(destination)}); integrity check ok")
    return 0


def _cmd_db_check(args: argparse.Namespace) -> int:
    import sqlite3

    from bot.backup import describe, integrity_problems

    if args.path is not None:
        path = args.path
        if not path.is_file():
            raise SettingsError(f"there is no file {path} to check.")
    else:
        path = _existing_database(load_settings())
    try:
        problems = integrity_problems(path)
        summary = describe(path)
    except sqlite3.Error as exc:
        raise SettingsError(f"{path} cannot be checked: {exc}") from None
    if problems:
        print(f"{path}: {len(problems)} problems found ({summary}):", file=sys.stderr)
        for problem in problems:
            print(f"  {problem}", file=sys.stderr)
        return 1
    print(f"{path}: ok ({summary})")
    return 0


def _cmd_sync(args: argparse.Namespace) -> int:
    import discord

    from bot.client import DreamGrid
    from bot.store import Store
    from engine.fake import FakeEngine

    settings = load_settings()
    if settings.discord_token is None:
        raise SettingsError("DISCORD_TOKEN is not set: `dreamgrid sync` registers commands with that bot's token.")
    token = settings.discord_token.get_secret_value()
    point_discord_py_at(settings.discord_api_base, settings.discord_gateway_url)
    guild_id = args.guild or settings.discord_guild_id

    async def sync() -> int:
        # The commands' definitions don't depend on the engine, so don't load a model to sync.
        async with Store.open(settings.database_path) as store:
            bot = DreamGrid(
                settings=settings, store=store, engine=FakeEngine(models=settings.installed_models), run_jobs=False
            )
            async with bot:
                await bot.login(token)
                guild = discord.Object(guild_id) if guild_id else None
                if guild is not None:
                    bot.tree.copy_global_to(guild=guild)
                synced = await bot.tree.sync(guild=guild)
                if guild is None:
                    await store.set_meta(f"commands_hash:{bot.application_id}", bot.commands_fingerprint())
        where = f"guild {guild_id}" if guild_id else "all servers (global commands can take a minute to appear)"
        print(f"registered {len(synced)} commands for {where}")
        return 0

    return asyncio.run(sync())


def _application_id_from_token(token: str) -> int | None:
    head = token.split(".", 1)[0]
    try:
        return int(base64.b64decode(head + "=" * (-len(head) % 4)).decode())
    except ValueError:
        return None


def _cmd_invite(args: argparse.Namespace) -> int:
    client_id = args.client_id
    if client_id is None:
        settings = load_settings()
        if settings.discord_token is not None:
            client_id = _application_id_from_token(settings.discord_token.get_secret_value())
    if client_id is None:
        raise SettingsError("pass --client-id (the Application ID from the Developer Portal) or set DISCORD_TOKEN.")
    print(
        f"https://discord.com/oauth2/authorize?client_id={client_id}"
        f"&scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}"
    )
    return 0


# The prompt parameters `dreamgrid imagine` takes as flags (`--model` is its own: an id or a folder).
_CLI_FLAGS = {p.name for p in PARAMETERS if p.cli}


def _prompt_parameters_as_flags(argv: list[str]) -> list[str]:
    """`dreamgrid imagine "a fox --ar 3:2 --seed 7"` means what it means in Discord.

    The prompt's Midjourney parameters become the engine CLI's flags; flags given after the
    prompt still win.
    """
    from bot.prompt import PromptError, parse_prompt

    if not argv or argv[0].startswith("-"):
        return argv
    try:
        parsed = parse_prompt(argv[0], max_jobs=1)[0]
    except PromptError as exc:
        raise SettingsError(f"imagine: {exc}") from None
    flags = [parsed.text]
    for name, value in parsed.parameter_values().items():
        if name not in _CLI_FLAGS:
            raise SettingsError(f"imagine: `--{name}` works in Discord only.")
        if value is True:
            flags.append(f"--{name}")
        else:
            shown = f"{value[0]}:{value[1]}" if isinstance(value, tuple) else str(value)
            flags += [f"--{name}", shown]
    return flags + argv[1:]


def _flag(argv: list[str], name: str) -> str | None:
    """The value of the last `name VALUE` in `argv` (argparse's rule: the last one wins)."""
    values = [argv[i + 1] for i, arg in enumerate(argv[:-1]) if arg == name]
    return values[-1] if values else None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dreamgrid", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("run", help="run the Discord bot (needs DISCORD_TOKEN)").set_defaults(func=_cmd_run)
    commands.add_parser(
        "imagine", help="render a grid to a PNG locally, no Discord (see `dreamgrid imagine -h`)", add_help=False
    )
    commands.add_parser("train", help="train a text-to-image model (see `dreamgrid train -h`)", add_help=False)
    commands.add_parser("eval", help="measure how well a model follows prompts", add_help=False)
    commands.add_parser("train-describer", help="train the image-to-text model behind /describe", add_help=False)
    commands.add_parser("eval-describer", help="measure how well a describer names what it sees", add_help=False)
    commands.add_parser("train-motion", help="train the shipped motion model behind Animate", add_help=False)
    commands.add_parser("eval-motion", help="judge the shipped motion model's clips from pixels", add_help=False)
    db = commands.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True)
    db.add_parser("upgrade", help="apply pending migrations").set_defaults(func=_cmd_db_upgrade)
    prune = db.add_parser("prune", help="delete old images now, as IMAGE_RETENTION_DAYS / IMAGE_STORE_MAX_GB say")
    prune.add_argument("--dry-run", action="store_true", help="only say what would be deleted")
    prune.add_argument("--days", type=positive(int), help="delete images older than this (default: the setting)")
    prune.add_argument("--max-gb", type=positive(float), help="keep the images under this size (default: the setting)")
    prune.set_defaults(func=_cmd_db_prune)
    backup = db.add_parser("backup", help="copy the database safely while the bot runs")
    backup.add_argument("path", type=Path, help="the backup file to write, or a folder to write a dated one in")
    backup.set_defaults(func=_cmd_db_backup)
    check = db.add_parser("check", help="check the database (or a backup) for corruption")
    check.add_argument("path", type=Path, nargs="?", help="a database file (default: the bot's)")
    check.set_defaults(func=_cmd_db_check)
    sync = commands.add_parser("sync", help="register the slash commands with Discord")
    sync.add_argument("--guild", type=int, help="register to this server only (appears at once)")
    sync.set_defaults(func=_cmd_sync)
    invite = commands.add_parser("invite", help="print the URL that adds the bot to a server")
    invite.add_argument("--client-id", type=int, help="the Application ID (default: read from DISCORD_TOKEN)")
    invite.set_defaults(func=_cmd_invite)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        # These hand their own arguments to the engine's command-line tools.
        if argv and argv[0] == "imagine":
            from engine.cli import imagine_main

            flags = _prompt_parameters_as_flags(argv[1:])
            # The same MODEL, MODELS, DEVICE, DTYPE, STEPS and GUIDANCE_SCALE as the bot (env and .env).
            settings = load_settings()
            model = settings.model_name(_flag(flags, "--model") or settings.default_model)
            return imagine_main(
                flags,
                model=settings.default_model,
                models=settings.installed_models,
                sources=settings.model_sources,
                schedulers=_schedulers(settings),
                device=settings.device,
                dtype=settings.dtype,
                base_steps=settings.steps,
                guidance_scale=settings.guidance_scale,
                # MODEL_DEFAULTS, before the model family's own (the engine knows those), before the above
                model_steps=settings.defaults_for(model).steps,
                model_guidance=settings.defaults_for(model).guidance_scale,
                size=settings.defaults_for(model).size,
            )
        if argv and argv[0] in ("train", "eval", "train-describer", "eval-describer", "train-motion", "eval-motion"):
            from engine.training.cli import COMMANDS

            return COMMANDS[argv[0]](argv[1:])
        args = build_parser().parse_args(argv)
        return args.func(args)
    except SettingsError as exc:
        print(f"dreamgrid: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
