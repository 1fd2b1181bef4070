"""The SQLite store: the only module that knows the schema. Plain parameterised SQL, no ORM.

One long-lived aiosqlite connection (one writer at a time is SQLite's rule anyway), WAL and
synchronous=NORMAL: a crash of the bot loses no committed row. The jobs table *is* the queue.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiosqlite

from bot.rows import TIME_FORMAT, ImageRow, Job, NewJob, parse_stored_time, parse_time
from bot.spec import InputImage, JobSpec

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_MIGRATION_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
ACTIVE = ("queued", "running")
MAX_ROW_ID = 2**63 - 1  # SQLite's INTEGER; a larger Python int overflows the driver
ANYWHERE: Any = object()  # jobs_today(): every server and DMs
FINISHED = ("done", "failed", "cancelled")


RELAX_USE_WINDOW = timedelta(days=1)  # Relax jobs go first to members who relaxed least in this window


def utcnow() -> str:
    return datetime.now(UTC).strftime(TIME_FORMAT)


def _since(window: timedelta) -> str:
    return (datetime.now(UTC) - window).strftime(TIME_FORMAT)


def month_start(now: datetime | None = None) -> datetime:
    """00:00 UTC on the first of this month: when fast time starts again."""
    return (now or datetime.now(UTC)).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True, slots=True)
class QueueLimits:
    max_running_per_user: int
    max_queued_per_user: int
    max_queue: int
    daily_quota: int | None = None  # jobs per member per UTC day in the server the jobs are for
    bot_daily_quota: int | None = None  # jobs per member per UTC day across every server and DMs (DAILY_QUOTA)


class MoodboardRefused(Exception):
    """A moodboard change the member must fix; `str()` is one line for them."""


class QueueFull(Exception):
    """A limit refused the job; the message names the numbers, for the member."""


def waiting_limit_message(wanted: int, waiting: int, limit: int) -> str:
    """Why several jobs were refused by the per-member waiting limit, with the numbers."""
    already = f", and you already have {waiting}" if waiting else ""
    return (
        f"This would queue {wanted} jobs, but a member may have {limit} waiting on this server{already}."
        " Nothing was queued."
    )


def quota_message(used: int, quota: int, wanted: int, where: str = "here") -> str:
    """Why a daily quota refuses `wanted` more jobs, and when it resets (a Discord timestamp)."""
    tomorrow = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    resets = f"<t:{int(tomorrow.timestamp())}:R>"
    if used >= quota:
        return f"You've used all {quota} of today's jobs {where}. The quota resets {resets}."
    return (
        f"That makes {wanted} jobs, but you have {quota - used} of today's {quota} left {where}."
        f" The quota resets {resets}."
    )


@dataclass(frozen=True, slots=True)
class UserProfile:
    settings: dict[str, Any]  # /settings: aspect, quality, stylize, remix, variation
    suffix: str  # /prefer suffix
    options: dict[str, str]  # /prefer option: name -> parameters


@dataclass(frozen=True, slots=True)
class StyleCode:
    """A member's own LoRA, trained by /tune: `--lora CODE` draws with it."""

    code: str
    user_id: int
    guild_id: int | None
    job_id: int | None
    path: str  # the .safetensors file, absolute
    bytes: int
    created_at: str


@dataclass(frozen=True, slots=True)
class ConfigChange:
    key: str
    old_value: Any  # None: it was at its default
    new_value: Any  # None: reset to the default
    changed_by: int
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class UserStats:
    queued: int
    running: int
    jobs_today: int
    jobs_total: int
    gpu_seconds: float


class Store:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db
        # One connection serves every coroutine: a statement sent while another coroutine's
        # BEGIN ... COMMIT is open would join (and roll back with) that transaction, and a second
        # BEGIN would fail. Transactions and single writes take turns through this lock.
        self._write_lock = asyncio.Lock()

    @classmethod
    @asynccontextmanager
    async def open(cls, path: Path | str) -> AsyncIterator[Store]:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(path, isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute("PRAGMA journal_mode=WAL")
            await db.execute("PRAGMA synchronous=NORMAL")
            await db.execute("PRAGMA foreign_keys=ON")
            await db.execute("PRAGMA busy_timeout=5000")
            store = cls(db)
            await store.upgrade()
            yield store
        finally:
            await db.close()

    # -- schema --------------------------------------------------------------------------

    async def version(self) -> int:
        async with self.db.execute("PRAGMA user_version") as cur:
            row = await cur.fetchone()
        assert row is not None  # a PRAGMA that reads a value returns one row
        return int(row[0])

    async def upgrade(self, migrations_dir: Path = MIGRATIONS_DIR) -> list[int]:
        """Apply every migration newer than the database, each in its own transaction."""
        current = await self.version()
        applied = []
        for number, path in available_migrations(migrations_dir):
            if number <= current:
                continue
            sql = path.read_text(encoding="utf-8")
            # Foreign keys are off while a migration runs (a table rebuild would otherwise cascade
            # deletes) and checked before it commits; the pragma is a no-op inside a transaction.
            await self.db.execute("PRAGMA foreign_keys=OFF")
            try:
                # executescript() commits an open transaction first, so the script carries its own.
                await self.db.executescript(f"BEGIN IMMEDIATE;\n{sql}\nPRAGMA user_version = {number};")
                async with self.db.execute("PRAGMA foreign_key_check") as cur:
                    broken = await cur.fetchall()
                if broken:
                    raise RuntimeError(f"migration {path.name} breaks foreign keys: {[tuple(r) for r in broken]}")
                await self.db.execute("COMMIT")
            except Exception:
                if self.db.in_transaction:
                    await self.db.execute("ROLLBACK")
                raise
            finally:
                await self.db.execute("PRAGMA foreign_keys=ON")
            log.info("applied migration %s", path.name)
            applied.append(number)
        return applied

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        async with self._write_lock:
            await self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                await self.db.execute("ROLLBACK")
                raise
            else:
                await self.db.execute("COMMIT")

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        """One autocommitted statement, never inside another coroutine's transaction."""
        async with self._write_lock, self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    async def _one(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row | None:
        async with self.db.execute(sql, params) as cur:
            return await cur.fetchone()

    async def _row(self, sql: str, params: Sequence[Any] = ()) -> aiosqlite.Row:
        """The row of a query that always returns one: an aggregate, or a row this transaction made sure of."""
        row = await self._one(sql, params)
        assert row is not None, sql
        return row

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self.db.execute(sql, params) as cur:
            return list(await cur.fetchall())

    # -- users and guilds ----------------------------------------------------------------

    async def profile(self, user_id: int) -> UserProfile:
        row = await self._one("SELECT settings, suffix FROM users WHERE id = ?", (user_id,))
        options = await self._all("SELECT name, value FROM user_options WHERE user_id = ? ORDER BY name", (user_id,))
        return UserProfile(
            settings=json.loads(row["settings"]) if row else {},
            suffix=row["suffix"] if row else "",
            options={r["name"]: r["value"] for r in options},
        )

    async def update_settings(self, user_id: int, **changes: Any) -> dict[str, Any]:
        """Merge `changes` into the member's /settings; a None value goes back to the default."""
        async with self.transaction() as db:
            await db.execute("INSERT INTO users (id) VALUES (?) ON CONFLICT DO NOTHING", (user_id,))
            row = await self._row("SELECT settings FROM users WHERE id = ?", (user_id,))
            settings = json.loads(row["settings"])
            for key, value in changes.items():
                if value is None:
                    settings.pop(key, None)
                else:
                    settings[key] = value
            await db.execute("UPDATE users SET settings = ? WHERE id = ?", (json.dumps(settings), user_id))
        return settings

    async def reset_settings(self, user_id: int) -> None:
        await self._write("UPDATE users SET settings = '{}' WHERE id = ?", (user_id,))

    async def set_suffix(self, user_id: int, suffix: str) -> None:
        await self._write(
            "INSERT INTO users (id, suffix) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET suffix = excluded.suffix",
            (user_id, suffix),
        )

    async def set_option(self, user_id: int, name: str, value: str) -> None:
        async with self.transaction() as db:
            await db.execute("INSERT INTO users (id) VALUES (?) ON CONFLICT DO NOTHING", (user_id,))
            await db.execute(
                "INSERT INTO user_options (user_id, name, value) VALUES (?, ?, ?)"
                " ON CONFLICT (user_id, name) DO UPDATE SET value = excluded.value",
                (user_id, name, value),
            )

    async def delete_option(self, user_id: int, name: str) -> bool:
        rows = await self._write(
            "DELETE FROM user_options WHERE user_id = ? AND name = ? RETURNING name", (user_id, name)
        )
        return bool(rows)

    # -- moodboards -----------------------------------------------------------------------

    async def moodboards(self, user_id: int) -> list[tuple[str, int]]:
        """The member's moodboards, by name, with how many pictures each holds."""
        rows = await self._all(
            "SELECT m.name, COUNT(p.idx) AS pictures FROM moodboards m"
            " LEFT JOIN moodboard_pictures p ON p.moodboard_id = m.id"
            " WHERE m.user_id = ? GROUP BY m.id ORDER BY m.name",
            (user_id,),
        )
        return [(r["name"], r["pictures"]) for r in rows]

    async def create_moodboard(self, user_id: int, name: str, most: int) -> None:
        """A new empty moodboard; MoodboardRefused when the name is taken or the member has `most` already."""
        async with self.transaction() as db:
            taken = await self._row("SELECT COUNT(*) AS n FROM moodboards WHERE user_id = ?", (user_id,))
            if await self._one("SELECT 1 FROM moodboards WHERE user_id = ? AND name = ?", (user_id, name)):
                raise MoodboardRefused(f"You already have a moodboard called `{name}`.")
            if taken["n"] >= most:
                raise MoodboardRefused(
                    f"You have {taken['n']} moodboards, the most this server allows: delete one first."
                )
            await db.execute("INSERT INTO moodboards (user_id, name) VALUES (?, ?)", (user_id, name))

    async def add_to_moodboard(self, user_id: int, name: str, picture: InputImage, most: int) -> int:
        """Add a stored picture; returns how many the moodboard holds now (MoodboardRefused past `most`)."""
        async with self.transaction() as db:
            board = await self._one("SELECT id FROM moodboards WHERE user_id = ? AND name = ?", (user_id, name))
            if board is None:
                raise MoodboardRefused(f"You have no moodboard called `{name}`: make it with `/moodboard create`.")
            count = (
                await self._row("SELECT COUNT(*) AS n FROM moodboard_pictures WHERE moodboard_id = ?", (board["id"],))
            )["n"]
            if count >= most:
                raise MoodboardRefused(f"`{name}` holds {count} pictures, the most this server allows.")
            await db.execute(
                "INSERT INTO moodboard_pictures (moodboard_id, idx, path, name, width, height)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (board["id"], count + 1, picture.path, picture.name, picture.width, picture.height),
            )
        return count + 1

    async def moodboard_pictures(self, user_id: int, name: str) -> list[InputImage] | None:
        """A moodboard's pictures in the order added; None when the member has none of that name."""
        board = await self._one("SELECT id FROM moodboards WHERE user_id = ? AND name = ?", (user_id, name))
        if board is None:
            return None
        rows = await self._all(
            "SELECT path, name, width, height FROM moodboard_pictures WHERE moodboard_id = ? ORDER BY idx",
            (board["id"],),
        )
        return [InputImage(path=r["path"], name=r["name"], width=r["width"], height=r["height"]) for r in rows]

    async def delete_moodboard(self, user_id: int, name: str) -> bool:
        rows = await self._write("DELETE FROM moodboards WHERE user_id = ? AND name = ? RETURNING id", (user_id, name))
        return bool(rows)

    # -- profiles (--p) --------------------------------------------------------------------

    async def rate(self, user_id: int, job_id: int, index: int, *, liked: bool, picture: InputImage) -> int:
        """Record ❤️ (liked) or 👎 on a picture, replacing an earlier verdict; returns how many the member likes."""
        async with self.transaction() as db:
            await db.execute(
                "INSERT INTO ratings (user_id, job_id, idx, liked, path, width, height) VALUES (?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (user_id, job_id, idx)"
                " DO UPDATE SET liked = excluded.liked, rated_at = excluded.rated_at",
                (user_id, job_id, index, int(liked), picture.path, picture.width, picture.height),
            )
            row = await self._row("SELECT COUNT(*) AS n FROM ratings WHERE user_id = ? AND liked = 1", (user_id,))
        return int(row["n"])

    async def liked_pictures(self, user_id: int, most: int) -> list[InputImage]:
        """The member's `most` most recently liked pictures, newest first."""
        rows = await self._all(
            "SELECT job_id, idx, path, width, height FROM ratings WHERE user_id = ? AND liked = 1"
            " ORDER BY rated_at DESC, job_id DESC, idx DESC LIMIT ?",
            (user_id, most),
        )
        return [
            InputImage(
                path=r["path"], name=f"job {r['job_id']} picture {r['idx']}", width=r["width"], height=r["height"]
            )
            for r in rows
        ]

    async def profile_code(self, user_id: int, pictures: Sequence[InputImage], new_code: int) -> int:
        """The code of a profile of exactly these pictures: the member's existing one, or `new_code` made for them."""
        frozen = json.dumps([dataclasses.asdict(p) for p in pictures])
        async with self.transaction() as db:
            row = await self._one(
                "SELECT code FROM profile_codes WHERE user_id = ? AND pictures = ?", (user_id, frozen)
            )
            if row is not None:
                return int(row["code"])
            await db.execute(
                "INSERT INTO profile_codes (code, user_id, pictures) VALUES (?, ?, ?)", (new_code, user_id, frozen)
            )
        return new_code

    async def profile_pictures(self, code: int) -> list[InputImage] | None:
        """The pictures a profile code froze; None for a code nobody was given."""
        row = await self._one("SELECT pictures FROM profile_codes WHERE code = ?", (code,))
        if row is None:
            return None
        return [InputImage(**picture) for picture in json.loads(row["pictures"])]

    async def enqueue(self, job: NewJob, limits: QueueLimits) -> Job:
        """Record a job as queued, or raise QueueFull without recording anything."""
        return (await self.enqueue_many([job], limits))[0]

    async def enqueue_many(self, jobs: Sequence[NewJob], limits: QueueLimits) -> list[Job]:
        """Record all of `jobs` (one member's, e.g. a --repeat) as queued, or none of them.

        The limits and the daily quota are checked in the same transaction as the inserts, so
        concurrent requests cannot slip past them together (30 at once once beat a quota of 5).
        QueueFull's message names the numbers, for the member.
        """
        if not jobs:
            return []
        user_id = jobs[0].user_id
        wanted = len(jobs)
        async with self.transaction() as db:
            if limits.bot_daily_quota is not None:
                used = await self.jobs_today(user_id)
                if used + wanted > limits.bot_daily_quota:
                    raise QueueFull(quota_message(used, limits.bot_daily_quota, wanted, "across every server"))
            if limits.daily_quota is not None:
                used = await self.jobs_today(user_id, jobs[0].guild_id)
                if used + wanted > limits.daily_quota:
                    raise QueueFull(quota_message(used, limits.daily_quota, wanted))
            row = await self._row(
                "SELECT COUNT(*) AS queued, COUNT(*) FILTER (WHERE user_id = ?) AS user_queued"
                " FROM jobs WHERE status = 'queued'",
                (user_id,),
            )
            queued, user_queued = row["queued"], row["user_queued"]
            if user_queued + wanted > limits.max_queued_per_user:
                if wanted == 1 or user_queued >= limits.max_queued_per_user:
                    raise QueueFull(
                        f"You already have {user_queued} jobs waiting"
                        f" (the limit is {limits.max_queued_per_user} per member)."
                        " Wait for some to finish, or cancel one with /cancel."
                    )
                raise QueueFull(waiting_limit_message(wanted, user_queued, limits.max_queued_per_user))
            if queued + wanted > limits.max_queue:
                raise QueueFull(
                    f"The queue is full ({queued} jobs waiting across the whole bot)."
                    + (f" {wanted} more would go over its limit of {limits.max_queue}." if wanted > 1 else "")
                    + " Please try again in a few minutes."
                )
            await db.execute("INSERT INTO users (id) VALUES (?) ON CONFLICT DO NOTHING", (user_id,))
            accepted = []
            for job in jobs:
                if job.guild_id is not None:
                    await db.execute("INSERT INTO guilds (id) VALUES (?) ON CONFLICT DO NOTHING", (job.guild_id,))
                expires = (
                    (datetime.now(UTC) + timedelta(seconds=job.token_lifetime_s)).strftime(TIME_FORMAT)
                    if job.interaction_token
                    else None
                )
                async with db.execute(
                    "INSERT INTO jobs (kind, parent_id, parent_index, user_id, guild_id, channel_id, prompt, params,"
                    " seeds, model, application_id, interaction_token, token_expires_at, mode)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING *",
                    (
                        job.kind,
                        job.parent_id,
                        job.parent_index,
                        job.user_id,
                        job.guild_id,
                        job.channel_id,
                        job.prompt,
                        job.spec.to_json(),
                        json.dumps(list(job.seeds)),
                        job.model,
                        job.application_id,
                        job.interaction_token,
                        expires,
                        job.mode,
                    ),
                ) as cur:
                    accepted.append(Job.from_row(await cur.fetchone()))
            return accepted

    async def last_job_id(self) -> int:
        """The highest job id so far (0 for none): every job queued later has a higher one."""
        row = await self._one("SELECT COALESCE(MAX(seq), 0) FROM sqlite_sequence WHERE name = 'jobs'")
        return int(row[0]) if row else 0

    async def queue_order(self) -> list[int]:
        """The queued jobs' ids in the order claim_next would start them.

        Replays claim_next: every Fast job before any Relax job; within a mode, round-robin
        (the member served longest ago goes next, one job per turn), and Relax members who
        used least Relax time recently first. It does not know when running jobs will finish,
        so per-member running limits are ignored: a forecast for the "position N" a member is
        shown, not a promise.
        """
        queued = await self._all("SELECT id, user_id, mode FROM jobs WHERE status = 'queued' ORDER BY id")
        if not queued:
            return []
        last = await self._all(
            "SELECT user_id, MAX(started_at) AS at FROM jobs WHERE started_at IS NOT NULL"
            " AND user_id IN (SELECT user_id FROM jobs WHERE status = 'queued') GROUP BY user_id"
        )
        last_start = {r["user_id"]: r["at"] for r in last}
        relax_use = await self._relax_use()
        order: list[int] = []
        for mode in ("fast", "relax"):
            per_user: dict[int, list[int]] = {}
            for r in queued:
                if r["mode"] == mode:
                    per_user.setdefault(r["user_id"], []).append(r["id"])
            # claim_next's ORDER BY: recent Relax use (Relax only), never started first, oldest start, oldest job.
            turn = sorted(
                per_user,
                key=lambda u: (
                    relax_use.get(u, 0.0) if mode == "relax" else 0.0,
                    last_start.get(u) is not None,
                    last_start.get(u) or "",
                    per_user[u][0],
                ),
            )
            while turn:
                remaining = []
                for user in turn:
                    order.append(per_user[user].pop(0))
                    if per_user[user]:
                        remaining.append(user)
                turn = remaining  # each member served this round goes to the back, in the same order
        return order

    async def _relax_use(self) -> dict[int, float]:
        rows = await self._all(
            "SELECT user_id, SUM(gpu_seconds) AS used FROM jobs WHERE mode = 'relax' AND created_at >= ?"
            " GROUP BY user_id",
            (_since(RELAX_USE_WINDOW),),
        )
        return {r["user_id"]: r["used"] for r in rows}

    async def queue_position(self, job_id: int) -> int:
        """1 for the next job to start; 0 when the job is no longer waiting."""
        order = await self.queue_order()
        return order.index(job_id) + 1 if job_id in order else 0

    async def claim_next(self, max_running_per_user: int) -> Job | None:
        """Start the next job: Fast before Relax, round-robin across members.

        Among members with a queued job and fewer than `max_running_per_user` running, a Fast
        job goes before any Relax job; Relax jobs go to the members who used least Relax time
        in the last RELAX_USE_WINDOW first. Then the member who waited longest since their last
        start goes first (a member who never started goes before anyone who did); within a
        member and mode, jobs go in order. A server's `max_running_per_user` setting
        (guild_settings) lowers the limit for jobs from that server.
        """
        async with self.transaction() as db:
            row = await self._one(
                """
                WITH eligible AS (
                    SELECT user_id, mode, MIN(id) AS first_job FROM jobs WHERE status = 'queued'
                    GROUP BY user_id, mode
                ),
                running AS (
                    SELECT user_id, COUNT(*) AS n FROM jobs WHERE status = 'running' GROUP BY user_id
                ),
                last_start AS (
                    SELECT user_id, MAX(started_at) AS at FROM jobs WHERE started_at IS NOT NULL GROUP BY user_id
                ),
                relax_use AS (
                    SELECT user_id, SUM(gpu_seconds) AS used FROM jobs WHERE mode = 'relax' AND created_at >= ?
                    GROUP BY user_id
                )
                SELECT e.first_job FROM eligible e
                LEFT JOIN running r ON r.user_id = e.user_id
                LEFT JOIN last_start l ON l.user_id = e.user_id
                LEFT JOIN relax_use u ON u.user_id = e.user_id AND e.mode = 'relax'
                -- a server's /config max_running_per_user can lower the bot-wide limit
                LEFT JOIN jobs fj ON fj.id = e.first_job
                LEFT JOIN guild_settings gl ON gl.guild_id = fj.guild_id AND gl.key = 'max_running_per_user'
                WHERE COALESCE(r.n, 0) < MIN(?, COALESCE(CAST(gl.value AS INTEGER), ?))
                ORDER BY e.mode = 'relax', COALESCE(u.used, 0), l.at IS NOT NULL, l.at, e.first_job
                LIMIT 1
                """,
                (_since(RELAX_USE_WINDOW), max_running_per_user, max_running_per_user),
            )
            if row is None:
                return None
            async with db.execute(
                "UPDATE jobs SET status = 'running', started_at = ?, attempts = attempts + 1, progress = 0"
                " WHERE id = ? RETURNING *",
                (utcnow(), row[0]),
            ) as cur:
                return Job.from_row(await cur.fetchone())

    async def set_progress(self, job_id: int, progress: float) -> None:
        await self._write("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (progress, job_id))

    # -- style codes (/tune) ---------------------------------------------------------------------

    async def add_style_code(self, style: StyleCode) -> None:
        await self._write(
            "INSERT INTO style_codes (code, user_id, guild_id, job_id, path, bytes, created_at)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (style.code, style.user_id, style.guild_id, style.job_id, style.path, style.bytes, style.created_at),
        )

    async def style_code(self, code: str) -> StyleCode | None:
        row = await self._one("SELECT * FROM style_codes WHERE code = ?", (code.lower(),))
        return StyleCode(**dict(row)) if row else None

    async def style_code_of_job(self, job_id: int) -> StyleCode | None:
        row = await self._one("SELECT * FROM style_codes WHERE job_id = ?", (job_id,))
        return StyleCode(**dict(row)) if row else None

    async def is_style_file(self, path: str) -> bool:
        return await self._one("SELECT 1 FROM style_codes WHERE path = ?", (path,)) is not None

    async def style_codes(self, user_id: int) -> list[StyleCode]:
        rows = await self._all("SELECT * FROM style_codes WHERE user_id = ? ORDER BY created_at", (user_id,))
        return [StyleCode(**dict(r)) for r in rows]

    async def delete_style_code(self, code: str) -> None:
        await self._write("DELETE FROM style_codes WHERE code = ?", (code.lower(),))

    async def set_message(self, job_id: int, message_id: int) -> None:
        await self._write("UPDATE jobs SET message_id = ? WHERE id = ?", (message_id, job_id))

    async def finish(
        self, job_id: int, images: Sequence[ImageRow], gpu_seconds: float, *, spec: JobSpec | None = None
    ) -> Job | None:
        """Mark a running job done with its images (and, for words, its spec with them); None if it was cancelled."""
        async with self.transaction() as db:
            async with db.execute(
                "UPDATE jobs SET status = 'done', progress = 1, finished_at = ?, gpu_seconds = gpu_seconds + ?,"
                " params = COALESCE(?, params) WHERE id = ? AND status = 'running' RETURNING *",
                (utcnow(), gpu_seconds, spec.to_json() if spec is not None else None, job_id),
            ) as cur:
                row = await cur.fetchone()
            if row is None:
                return None
            await _insert_images(db, images)
            return Job.from_row(row)

    async def save_images(self, images: Sequence[ImageRow]) -> None:
        async with self.transaction() as db:
            await _insert_images(db, images)

    async def fail(self, job_id: int, error: str, gpu_seconds: float = 0.0) -> Job | None:
        rows = await self._write(
            "UPDATE jobs SET status = 'failed', error = ?, finished_at = ?, gpu_seconds = gpu_seconds + ?"
            " WHERE id = ? AND status IN ('queued', 'running') RETURNING *",
            (error, utcnow(), gpu_seconds, job_id),
        )
        return Job.from_row(rows[0]) if rows else None

    async def cancel(self, job_id: int) -> Job | None:
        """Cancel a queued or running job; None if it had already finished."""
        rows = await self._write(
            "UPDATE jobs SET status = 'cancelled', finished_at = ? WHERE id = ? AND status IN ('queued', 'running')"
            " RETURNING *",
            (utcnow(), job_id),
        )
        return Job.from_row(rows[0]) if rows else None

    async def add_gpu_seconds(self, job_id: int, seconds: float) -> None:
        """GPU time a job used before it was cancelled still counts towards its member's usage."""
        await self._write("UPDATE jobs SET gpu_seconds = gpu_seconds + ? WHERE id = ?", (seconds, job_id))

    async def mark_delivered(self, job_id: int, channel_id: int | None, message_id: int | None) -> bool:
        """Record that the member was shown the final state; False if that was already recorded."""
        rows = await self._write(
            "UPDATE jobs SET delivered_at = ?, result_channel_id = ?, result_message_id = ?"
            " WHERE id = ? AND delivered_at IS NULL RETURNING id",
            (utcnow(), channel_id, message_id, job_id),
        )
        return bool(rows)

    async def requeue(self, job_id: int) -> None:
        """Put a running job back in the queue without counting the attempt (a clean shutdown)."""
        await self._write(
            "UPDATE jobs SET status = 'queued', progress = 0, attempts = MAX(attempts - 1, 0)"
            " WHERE id = ? AND status = 'running'",
            (job_id,),
        )

    async def retry(self, job_id: int) -> bool:
        """Put a running job whose render was lost back in the queue; the attempt stays counted."""
        rows = await self._write(
            "UPDATE jobs SET status = 'queued', progress = 0 WHERE id = ? AND status = 'running' RETURNING id",
            (job_id,),
        )
        return bool(rows)

    async def jobs_by_status(self) -> dict[str, int]:
        """How many jobs wait and run now (for the metrics)."""
        rows = await self._all(
            "SELECT status, COUNT(*) FROM jobs WHERE status IN ('queued', 'running') GROUP BY status"
        )
        return {"queued": 0, "running": 0, **{row[0]: row[1] for row in rows}}

    async def queue_counts(self, guild_id: int | None) -> tuple[int, int, int]:
        """(waiting here, running here, waiting across the bot): what /queue shows of the line."""
        row = await self._row(
            "SELECT COALESCE(SUM(status = 'queued' AND guild_id IS ?), 0),"
            " COALESCE(SUM(status = 'running' AND guild_id IS ?), 0), COALESCE(SUM(status = 'queued'), 0)"
            " FROM jobs WHERE status IN ('queued', 'running')",
            (guild_id, guild_id),
        )
        return int(row[0]), int(row[1]), int(row[2])

    async def typical_run_seconds(self, recent: int = 20) -> float | None:
        """How long a job has been taking from start to finish: the median of the last `recent` that
        finished done. None before any has. (Measured, not device time: batching and waits count.)"""
        rows = await self._all(
            "SELECT (julianday(finished_at) - julianday(started_at)) * 86400.0 FROM jobs"
            " WHERE status = 'done' AND started_at IS NOT NULL AND finished_at IS NOT NULL"
            " ORDER BY finished_at DESC LIMIT ?",
            (recent,),
        )
        durations = sorted(max(0.0, float(r[0])) for r in rows)
        return durations[len(durations) // 2] if durations else None

    async def recover(self, max_attempts: int) -> tuple[int, int]:
        """After a crash: re-queue jobs that were running; fail those that crashed too often.

        Returns (requeued, failed).
        """
        async with self.transaction() as db:
            async with db.execute(
                "UPDATE jobs SET status = 'failed', finished_at = ?,"
                " error = 'This job stopped the bot ' || attempts || ' times, so it was not tried again.'"
                " WHERE status = 'running' AND attempts >= ? RETURNING id",
                (utcnow(), max_attempts),
            ) as cur:
                failed = len(list(await cur.fetchall()))
            async with db.execute(
                "UPDATE jobs SET status = 'queued', progress = 0 WHERE status = 'running' RETURNING id"
            ) as cur:
                requeued = len(list(await cur.fetchall()))
        return requeued, failed

    async def undelivered(self) -> list[Job]:
        """Finished jobs whose final state the member has not been shown yet."""
        rows = await self._all(
            "SELECT * FROM jobs WHERE delivered_at IS NULL AND status IN ('done', 'failed', 'cancelled') ORDER BY id"
        )
        return [Job.from_row(r) for r in rows]

    # -- lookups -------------------------------------------------------------------------

    async def get_job(self, job_id: int) -> Job | None:
        if not 0 < job_id <= MAX_ROW_ID:  # a hand-made custom_id can carry any number
            return None
        row = await self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))
        return Job.from_row(row) if row else None

    async def active_jobs(self, user_id: int) -> list[Job]:
        rows = await self._all(
            "SELECT * FROM jobs WHERE user_id = ? AND status IN ('queued', 'running') ORDER BY id", (user_id,)
        )
        return [Job.from_row(r) for r in rows]

    async def get_images(self, job_id: int) -> list[ImageRow]:
        rows = await self._all("SELECT * FROM images WHERE job_id = ? ORDER BY idx", (job_id,))
        return [ImageRow(**{**dict(r), "flagged": bool(r["flagged"])}) for r in rows]

    async def user_stats(self, user_id: int) -> UserStats:
        row = await self._row(
            "SELECT COUNT(*) FILTER (WHERE status = 'queued') AS queued,"
            " COUNT(*) FILTER (WHERE status = 'running') AS running,"
            " COUNT(*) FILTER (WHERE created_at >= strftime('%Y-%m-%dT00:00:00.000Z', 'now')) AS jobs_today,"
            " COUNT(*) AS jobs_total, COALESCE(SUM(gpu_seconds), 0) AS gpu_seconds"
            " FROM jobs WHERE user_id = ?",
            (user_id,),
        )
        return UserStats(**dict(row))

    # -- image retention ------------------------------------------------------------------

    async def settled_jobs(self, job_ids: Sequence[int]) -> set[int]:
        """Those of `job_ids` that finished and whose member has been shown the result.

        Only their files may be pruned: a finished job never runs again, and a result waiting
        to be delivered still needs its files to be uploaded.
        """
        rows = await self._all(
            "SELECT id FROM jobs WHERE id IN (SELECT value FROM json_each(?))"
            " AND status IN ('done', 'failed', 'cancelled') AND delivered_at IS NOT NULL",
            (json.dumps(list(job_ids)),),
        )
        return {r["id"] for r in rows}

    async def files_in_use(self) -> set[str]:
        """Paths (relative to DATA_DIR) that a queued or running job reads or writes, or whose
        result is still to be shown: never pruned.

        Any table that attaches a file to a job belongs in this union, so that a file row of an
        unfinished job is protected whichever table it lives in. A running job's own files may be
        on disk before its rows are, so the pruner also keeps to settled_jobs().
        """
        rows = await self._all(
            """
            -- queued, running, or finished with the result not yet shown
            SELECT path FROM images WHERE job_id IN (SELECT id FROM jobs WHERE delivered_at IS NULL)
            UNION  -- the tiles a queued or running variation or upscale starts from
            SELECT path FROM images WHERE job_id IN (
                SELECT parent_id FROM jobs WHERE status IN ('queued', 'running') AND parent_id IS NOT NULL
            )
            """
        )
        return {r["path"] for r in rows}

    # -- server settings (/config) and moderation ----------------------------------------

    async def guild_settings(self, guild_id: int) -> dict[str, Any]:
        rows = await self._all("SELECT key, value FROM guild_settings WHERE guild_id = ?", (guild_id,))
        return {r["key"]: json.loads(r["value"]) for r in rows}

    async def change_guild_setting(self, guild_id: int, key: str, value: Any, changed_by: int) -> Any:
        """Set (or, with None, reset) one key and record the change; returns the old value (None: default)."""
        new = None if value is None else json.dumps(value)
        async with self.transaction() as db:
            await db.execute("INSERT INTO guilds (id) VALUES (?) ON CONFLICT DO NOTHING", (guild_id,))
            row = await self._one("SELECT value FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
            old = row["value"] if row else None
            if new is None:
                await db.execute("DELETE FROM guild_settings WHERE guild_id = ? AND key = ?", (guild_id, key))
            else:
                await db.execute(
                    "INSERT INTO guild_settings (guild_id, key, value, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)"
                    " ON CONFLICT (guild_id, key) DO UPDATE SET value = excluded.value,"
                    " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
                    (guild_id, key, new, changed_by, utcnow()),
                )
            await db.execute(
                "INSERT INTO config_history (guild_id, key, old_value, new_value, changed_by, changed_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (guild_id, key, old, new, changed_by, utcnow()),
            )
        return None if old is None else json.loads(old)

    async def config_history(self, guild_id: int, limit: int = 20) -> list[ConfigChange]:
        """The latest `limit` changes, oldest first."""
        rows = await self._all(
            "SELECT * FROM (SELECT * FROM config_history WHERE guild_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
            (guild_id, limit),
        )
        return [
            ConfigChange(
                key=r["key"],
                old_value=None if r["old_value"] is None else json.loads(r["old_value"]),
                new_value=None if r["new_value"] is None else json.loads(r["new_value"]),
                changed_by=r["changed_by"],
                changed_at=parse_stored_time(r["changed_at"]),
            )
            for r in rows
        ]

    async def log_moderation(self, guild_id: int, channel_id: int, user_id: int, prompt: str, matched: str) -> None:
        await self._write(
            "INSERT INTO moderation_log (guild_id, channel_id, user_id, prompt, matched) VALUES (?, ?, ?, ?, ?)",
            (guild_id, channel_id, user_id, prompt, matched),
        )

    async def moderation_log(self, guild_id: int, limit: int = 50) -> list[dict[str, Any]]:
        rows = await self._all(
            "SELECT * FROM moderation_log WHERE guild_id = ? ORDER BY id DESC LIMIT ?", (guild_id, limit)
        )
        return [{**dict(r), "created_at": parse_time(r["created_at"])} for r in rows]

    async def fast_seconds_this_month(self, user_id: int, guild_id: int | None) -> float:
        """Device time the member's Fast jobs used on this server (or in DMs) since the month began."""
        row = await self._row(
            "SELECT COALESCE(SUM(gpu_seconds), 0) FROM jobs WHERE user_id = ? AND guild_id IS ? AND mode = 'fast'"
            " AND created_at >= ?",
            (user_id, guild_id, month_start().strftime(TIME_FORMAT)),
        )
        return float(row[0])

    async def jobs_today(self, user_id: int, guild_id: int | None = ANYWHERE) -> int:
        """Jobs the member started in this server (None: in DMs; ANYWHERE: in all) since 00:00 UTC.

        Failed jobs are not counted: a quota pays for what was drawn.
        """
        where = "" if guild_id is ANYWHERE else " AND guild_id IS ?"
        row = await self._row(
            "SELECT COUNT(*) FROM jobs WHERE user_id = ? AND status != 'failed'"
            " AND created_at >= strftime('%Y-%m-%dT00:00:00.000Z', 'now')" + where,
            (user_id,) if guild_id is ANYWHERE else (user_id, guild_id),
        )
        return int(row[0])

    # -- installation facts ---------------------------------------------------------------

    async def get_meta(self, key: str) -> str | None:
        row = await self._one("SELECT value FROM meta WHERE key = ?", (key,))
        return row[0] if row else None

    async def set_meta(self, key: str, value: str) -> None:
        await self._write(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )


async def _insert_images(db: aiosqlite.Connection, images: Sequence[ImageRow]) -> None:
    await db.executemany(
        "INSERT OR REPLACE INTO images (job_id, idx, path, width, height, seed, flagged) VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(i.job_id, i.idx, i.path, i.width, i.height, i.seed, int(i.flagged)) for i in images],
    )


def available_migrations(migrations_dir: Path = MIGRATIONS_DIR) -> list[tuple[int, Path]]:
    found = []
    for path in sorted(migrations_dir.glob("*.sql")):
        match = _MIGRATION_NAME.match(path.name)
        if not match:
            raise ValueError(f"migration file {path.name!r} is not named NNNN_what.sql")
        found.append((int(match.group(1)), path))
    numbers = [n for n, _ in found]
    if numbers != list(range(1, len(numbers) + 1)):
        raise ValueError(f"migrations must be numbered 1..N without gaps, found {numbers}")
    return found
