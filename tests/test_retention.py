"""Image retention and backups, on a real database and real files: what goes, what must stay."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bot.backup import backup_database, integrity_problems
from bot.retention import ImageRetention, RetentionPolicy, prune, storage_usage
from bot.spec import JobSpec, RenderSpec
from bot.store import ImageRow, NewJob, QueueLimits, Store
from tests.harness import eventually

LIMITS = QueueLimits(max_running_per_user=100, max_queued_per_user=1000, max_queue=1000)
DAY = 86400.0
NOW = time.time()


@pytest.fixture
async def store(tmp_path: Path):
    async with Store.open(tmp_path / "dreamgrid.sqlite3") as store:
        yield store


def new_job(parent_id: int | None = None, kind: str = "imagine") -> NewJob:
    return NewJob(
        kind=kind,
        user_id=7,
        guild_id=1,
        channel_id=2,
        prompt="a red circle",
        spec=JobSpec(render=RenderSpec(prompt="a red circle", steps=4)),
        seeds=[1, 2, 3, 4],
        model="m",
        parent_id=parent_id,
        parent_index=1 if parent_id else None,
    )


def write_files(data_dir: Path, job_id: int, *, age_days: float, size: int = 1000, tiles: int = 4) -> list[ImageRow]:
    rows = []
    for idx in range(1, tiles + 1):
        relative = f"images/{job_id}/{idx}.png"
        path = data_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        mtime = NOW - age_days * DAY
        os.utime(path, (mtime, mtime))
        rows.append(ImageRow(job_id, idx, relative, 64, 64, idx))
    return rows


async def done_job(store: Store, data_dir: Path, *, age_days: float, delivered: bool = True) -> int:
    job = await store.enqueue(new_job(), LIMITS)
    running = await store.claim_next(100)
    assert running.id == job.id
    await store.finish(job.id, write_files(data_dir, job.id, age_days=age_days), gpu_seconds=0.1)
    if delivered:
        await store.mark_delivered(job.id, 2, 1000 + job.id)
    return job.id


def kept(data_dir: Path, job_id: int) -> bool:
    return all((data_dir / f"images/{job_id}/{idx}.png").exists() for idx in range(1, 5))


async def test_the_budget_deletes_the_oldest_finished_jobs_and_never_those_in_use(store: Store, tmp_path: Path):
    # ten finished jobs of 4 KB each, job 1 the oldest
    done = [await done_job(store, tmp_path, age_days=20 - n) for n in range(10)]
    # a finished job whose result Discord has not taken yet (its files are about to be uploaded)
    undelivered = await done_job(store, tmp_path, age_days=30, delivered=False)
    # a queued variation of job 1 will read its tiles; a running job is writing its files (no rows yet)
    await store.enqueue(new_job(parent_id=done[0], kind="variation"), LIMITS)
    running = await store.enqueue(new_job(), LIMITS)
    await store._write("UPDATE jobs SET status = 'running' WHERE id = ?", (running.id,))
    write_files(tmp_path, running.id, age_days=30)
    # a folder of no job we know, and a stray file: not ours to delete
    write_files(tmp_path, 999, age_days=30)
    (tmp_path / "images" / "notes.txt").write_text("x" * 1000)

    policy = RetentionPolicy(max_bytes=30_000)  # 53 KB stored
    dry = await prune(store, tmp_path, policy, dry_run=True)
    assert dry.dry_run and dry.jobs and all(kept(tmp_path, job_id) for job_id in done)

    report = await prune(store, tmp_path, policy)
    assert report.jobs == dry.jobs
    # under 90 % of the budget; the oldest jobs went, skipping job 1 (a queued job's source)
    assert report.bytes_after <= 27_000 and report.freed_bytes == report.bytes_before - report.bytes_after
    assert report.jobs == tuple(done[1:8])
    assert (await storage_usage(tmp_path)).image_bytes == report.bytes_after
    assert [kept(tmp_path, job_id) for job_id in done] == [True] + [False] * 7 + [True] * 2
    assert kept(tmp_path, running.id) and kept(tmp_path, undelivered) and kept(tmp_path, 999)
    assert (tmp_path / "images" / "notes.txt").exists()
    assert not (tmp_path / "images" / str(done[1])).exists()  # no empty folders left behind
    # the jobs are all still there, with the request and seeds to draw them again
    for job_id in done:
        job = await store.get_job(job_id)
        assert job.status == "done" and job.seeds == [1, 2, 3, 4]
    assert len(await store.get_images(done[1])) == 4

    again = await prune(store, tmp_path, policy)
    assert again.jobs == () and again.summary().startswith("nothing to delete")


async def test_the_age_limit_deletes_older_images_only(store: Store, tmp_path: Path):
    old, recent = await done_job(store, tmp_path, age_days=31), await done_job(store, tmp_path, age_days=29)
    cancelled = await store.enqueue(new_job(), LIMITS)
    write_files(tmp_path, cancelled.id, age_days=40, tiles=1)  # a partial result left by a cancel
    # a member's picture, older than the limit: counted, never deleted (nothing could draw it again)
    picture = tmp_path / "inputs" / "0123abcd.png"
    picture.parent.mkdir()
    picture.write_bytes(b"x" * 700)
    os.utime(picture, (NOW - 90 * DAY, NOW - 90 * DAY))
    await store.cancel(cancelled.id)
    await store.mark_delivered(cancelled.id, 2, 3)

    usage = await storage_usage(tmp_path)
    assert usage.image_files == 9 and usage.oldest_image.timestamp() == pytest.approx(NOW - 40 * DAY)
    assert (usage.input_files, usage.input_bytes) == (1, 700)
    assert 0 < usage.free_bytes <= usage.disk_bytes

    report = await prune(store, tmp_path, RetentionPolicy(max_age_days=30))
    assert set(report.jobs) == {old, cancelled.id} and report.files == 5
    assert kept(tmp_path, recent) and not kept(tmp_path, old)
    assert (await storage_usage(tmp_path)).oldest_image.timestamp() == pytest.approx(NOW - 29 * DAY)
    assert picture.exists()


async def test_a_backup_taken_while_jobs_are_written_is_consistent(store: Store, tmp_path: Path):
    stop = asyncio.Event()

    async def keep_writing() -> int:
        written = 0
        while not stop.is_set():
            await done_job(store, tmp_path, age_days=0)
            written += 1
            await asyncio.sleep(0)
        return written

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.2)
    copies = []
    for n in range(3):
        copies.append(tmp_path / f"backup-{n}.sqlite3")
        await asyncio.to_thread(backup_database, tmp_path / "dreamgrid.sqlite3", copies[-1])
    stop.set()
    written = await writer

    for copy in copies:
        assert integrity_problems(copy) == []
        with sqlite3.connect(copy) as db:
            jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
            # a job finishes and gets its images in one transaction: no copy has one without the other
            incomplete = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE status = 'done'"
                " AND (SELECT COUNT(*) FROM images WHERE job_id = jobs.id) != 4"
            ).fetchone()[0]
        assert 0 < jobs <= written and incomplete == 0
        assert not copy.with_name(copy.name + "-wal").exists()  # one self-contained file


async def test_the_bots_sweep_applies_the_age_limit_at_start_and_stops_cleanly(store: Store, tmp_path: Path):
    old, recent = await done_job(store, tmp_path, age_days=10), await done_job(store, tmp_path, age_days=1)
    ImageRetention(store, tmp_path, RetentionPolicy()).start()  # nothing set: no task at all

    retention = ImageRetention(store, tmp_path, RetentionPolicy(max_age_days=7))
    retention.start()

    async def old_images_gone() -> bool:
        return not (tmp_path / "images" / str(old)).exists()

    await eventually(old_images_gone, bool)
    await retention.stop()
    assert kept(tmp_path, recent)
    assert not [t for t in asyncio.all_tasks() if t.get_name() == "dreamgrid-image-retention"]
