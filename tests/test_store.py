"""The SQLite store: migrations, the queue's order and limits, crash recovery."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import aiosqlite
import pytest

from bot.spec import JobSpec, RenderSpec
from bot.store import MIGRATIONS_DIR, NewJob, QueueFull, QueueLimits, Store, available_migrations

LIMITS = QueueLimits(max_running_per_user=3, max_queued_per_user=10, max_queue=100)


def job(user_id: int, prompt: str = "a red circle", **kw) -> NewJob:
    return NewJob(
        kind="imagine",
        user_id=user_id,
        guild_id=1,
        channel_id=2,
        prompt=prompt,
        spec=JobSpec(render=RenderSpec(prompt=prompt, steps=4)),
        seeds=[1, 2, 3, 4],
        model="m",
        **kw,
    )


@pytest.fixture
async def store(tmp_path: Path):
    async with Store.open(tmp_path / "db.sqlite3") as store:
        yield store


async def test_fresh_database_is_at_the_latest_schema(store: Store) -> None:
    assert await store.version() == len(available_migrations())
    assert await store.upgrade() == []  # idempotent


async def test_a_failing_migration_changes_nothing(tmp_path: Path) -> None:
    migrations = tmp_path / "migrations"
    shutil.copytree(MIGRATIONS_DIR, migrations)
    broken = len(available_migrations(migrations)) + 1
    (migrations / f"{broken:04d}_broken.sql").write_text("CREATE TABLE half_done (x);\nTHIS IS NOT SQL;\n")
    async with Store.open(tmp_path / "db.sqlite3") as store:
        before = await store.version()
        with pytest.raises(Exception, match="syntax error"):
            await store.upgrade(migrations)
        assert await store.version() == before
        tables = [r[0] for r in await store._all("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "half_done" not in tables


async def test_migrations_must_be_numbered_without_gaps(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("")
    (tmp_path / "0003_c.sql").write_text("")
    with pytest.raises(ValueError, match="without gaps"):
        available_migrations(tmp_path)


async def test_round_robin_lets_a_late_member_go_before_a_flooders_third_job(store: Store) -> None:
    for _ in range(10):
        await store.enqueue(job(user_id=1), LIMITS)
    late = await store.enqueue(job(user_id=2), LIMITS)
    started = []
    for _ in range(3):
        claimed = await store.claim_next(max_running_per_user=10)
        started.append(claimed.user_id)
    assert started == [1, 2, 1]
    assert (await store.get_job(late.id)).status == "running"


async def test_a_relax_job_waits_while_a_fast_job_is_queued_and_runs_when_none_is(store: Store) -> None:
    relax = await store.enqueue(job(1, "relaxed", mode="relax"), LIMITS)
    fast = await store.enqueue(job(2, "in a hurry"), LIMITS)
    assert await store.queue_order() == [fast.id, relax.id]
    assert (await store.claim_next(3)).id == fast.id  # although the relax job is older
    assert (await store.claim_next(3)).id == relax.id  # no fast job waits now
    assert (await store.get_job(relax.id)).mode == "relax"


async def test_relax_jobs_go_first_to_members_who_relaxed_least_today(store: Store) -> None:
    earlier = await store.enqueue(job(1, "yesterday's habit", mode="relax"), LIMITS)
    await store.claim_next(3)
    await store.finish(earlier.id, [], gpu_seconds=600)
    heavy = await store.enqueue(job(1, "more", mode="relax"), LIMITS)
    light = await store.enqueue(job(2, "first relax today", mode="relax"), LIMITS)
    assert await store.queue_order() == [light.id, heavy.id]
    assert (await store.claim_next(3)).id == light.id


async def test_fast_time_counts_fast_jobs_of_this_month_on_this_server(store: Store) -> None:
    for mode, seconds in (("fast", 30.0), ("relax", 500.0), ("fast", 12.5)):
        queued = await store.enqueue(job(1, mode=mode), LIMITS)
        await store.claim_next(3)
        await store.finish(queued.id, [], gpu_seconds=seconds)
    assert await store.fast_seconds_this_month(1, guild_id=1) == 42.5
    assert await store.fast_seconds_this_month(1, guild_id=99) == 0


async def test_per_member_running_limit_holds_back_their_next_job(store: Store) -> None:
    for _ in range(3):
        await store.enqueue(job(user_id=1), LIMITS)
    assert await store.claim_next(max_running_per_user=2) is not None
    assert await store.claim_next(max_running_per_user=2) is not None
    assert await store.claim_next(max_running_per_user=2) is None


async def test_queue_limits_refuse_with_the_numbers_and_record_nothing(store: Store) -> None:
    limits = QueueLimits(max_running_per_user=3, max_queued_per_user=2, max_queue=3)
    await store.enqueue(job(user_id=1), limits)
    await store.enqueue(job(user_id=1), limits)
    with pytest.raises(QueueFull, match=r"already have 2 jobs waiting \(the limit is 2 per member\)"):
        await store.enqueue(job(user_id=1), limits)
    await store.enqueue(job(user_id=2), limits)
    with pytest.raises(QueueFull, match=r"queue is full \(3 jobs waiting across the whole bot\)"):
        await store.enqueue(job(user_id=3), limits)
    assert (await store._one("SELECT COUNT(*) FROM jobs"))[0] == 3


async def test_recover_requeues_interrupted_jobs_and_gives_up_on_repeat_offenders(store: Store) -> None:
    a = await store.enqueue(job(user_id=1), LIMITS)
    b = await store.enqueue(job(user_id=2), LIMITS)
    await store.claim_next(3)
    await store.claim_next(3)
    await store.db.execute("UPDATE jobs SET attempts = 3 WHERE id = ?", (b.id,))
    assert await store.recover(max_attempts=3) == (1, 1)
    assert (await store.get_job(a.id)).status == "queued"
    failed = await store.get_job(b.id)
    assert failed.status == "failed" and "3 times" in failed.error


async def test_finish_after_cancel_keeps_it_cancelled(store: Store) -> None:
    a = await store.enqueue(job(user_id=1), LIMITS)
    await store.claim_next(3)
    assert (await store.cancel(a.id)).status == "cancelled"
    assert await store.finish(a.id, [], 1.0) is None
    assert (await store.get_job(a.id)).status == "cancelled"


async def test_user_stats_count_jobs_and_gpu_time(store: Store) -> None:
    a = await store.enqueue(job(user_id=1), LIMITS)
    await store.enqueue(job(user_id=1), LIMITS)
    await store.claim_next(3)
    await store.finish(a.id, [], 2.5)
    stats = await store.user_stats(1)
    assert (stats.queued, stats.running, stats.jobs_today, stats.jobs_total) == (1, 0, 2, 2)
    assert stats.gpu_seconds == pytest.approx(2.5)


async def test_interaction_token_expires_before_discords_15_minutes(store: Store) -> None:
    fresh = await store.enqueue(job(user_id=1, interaction_token="tok", application_id=9), LIMITS)
    stale = await store.enqueue(job(user_id=1, interaction_token="tok", application_id=9, token_lifetime_s=-1), LIMITS)
    assert fresh.token_usable and not stale.token_usable


async def test_migration_0003_keeps_old_jobs_images_and_ids_and_takes_any_kind(tmp_path: Path) -> None:
    old_schema = tmp_path / "migrations-0002"
    old_schema.mkdir()
    for number, path in available_migrations():
        if number <= 2:
            shutil.copy(path, old_schema / path.name)
    db_path = tmp_path / "db.sqlite3"
    old_params = {  # a row as the bot stored it before the typed spec: one flat dict
        "prompt": "a fox", "negative_prompt": "", "width": 64, "height": 48, "aspect": "4:3", "steps": 9,
        "quality": 1, "stylize": 100, "guidance_scale": 7.5, "chaos": 0, "stop": 100, "tile": False,
        "upload_limit": 8_000_000, "safety_check": True, "spoiler_flagged": False, "strength": None,
    }  # fmt: skip
    async with aiosqlite.connect(db_path, isolation_level=None) as db:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA foreign_keys=ON")
        await Store(db).upgrade(old_schema)
        await db.execute("INSERT INTO users (id) VALUES (1)")
        for job_id, kind, parent in ((1, "imagine", None), (2, "upscale", 1), (3, "imagine", None)):
            await db.execute(
                "INSERT INTO jobs (id, kind, parent_id, parent_index, user_id, channel_id, prompt, params, seeds,"
                " model, status) VALUES (?, ?, ?, 2, 1, 5, 'a fox --ar 4:3', ?, '[1, 2, 3, 4]', 'm', 'done')",
                (job_id, kind, parent, json.dumps(old_params)),
            )
        await db.execute(
            "INSERT INTO images (job_id, idx, path, width, height, seed) VALUES (1, 2, 'a.png', 64, 48, 2)"
        )
        await db.execute("DELETE FROM jobs WHERE id = 3")  # ids are never reused, even the last one's

    async with Store.open(db_path) as store:
        assert await store.version() == len(available_migrations())
        job, child = await store.get_job(1), await store.get_job(2)
        assert (job.spec.render.width, job.spec.render.steps, job.spec.render.safety_check) == (64, 9, True)
        assert (job.spec.shown.aspect, job.spec.delivery.upload_limit, job.spec.delivery.spoiler_flagged) == (
            "4:3",
            8_000_000,
            False,
        )
        assert (child.kind, child.parent_id) == ("upscale", 1)
        assert [(i.idx, i.path) for i in await store.get_images(1)] == [(2, "a.png")]
        indexes = {r[0] for r in await store._all("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"jobs_by_status", "jobs_by_user", "jobs_undelivered", "jobs_by_user_guild"} <= indexes
        assert await store._all("PRAGMA foreign_key_check") == []
        assert (await store._one("PRAGMA foreign_keys"))[0] == 1
        # A kind the schema never heard of is just a row now; the next id follows the deleted job 3.
        new = await store.enqueue(job_of_kind("zoom_out"), LIMITS)
        assert (new.id, new.kind) == (4, "zoom_out")
        # Images still go with their job.
        await store.db.execute("DELETE FROM jobs WHERE id = 2")
        await store.db.execute("DELETE FROM jobs WHERE id = 1")
        assert await store.get_images(1) == []


def job_of_kind(kind: str) -> NewJob:
    return dataclasses.replace(job(user_id=1), kind=kind)


async def test_last_job_id_is_what_every_later_job_comes_after(store: Store) -> None:
    assert await store.last_job_id() == 0
    first = await store.enqueue(job(user_id=1), LIMITS)
    await store.db.execute("DELETE FROM jobs WHERE id = ?", (first.id,))
    assert await store.last_job_id() == first.id  # a deleted job's id is not handed out again
    assert (await store.enqueue(job(user_id=1), LIMITS)).id > first.id
