"""Keeping the images folder in bounds: images deleted by age and by a size budget, and its figures.

Deleting an image loses nothing a member can't get back: the job's row keeps its request and
seeds, and U, V, ✉️ and /show draw a job whose files are gone again (same seeds, same pixels).
So any file of a finished job whose result was shown may go, oldest first; never a file that a
queued or running job reads or writes. The walking and deleting happen in a thread, off the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath

from bot.settings import Settings
from bot.store import Store

log = logging.getLogger(__name__)

IMAGES_DIR = "images"  # under DATA_DIR; a job's files are images/<job id>/…
INPUTS_DIR = "inputs"  # under DATA_DIR; members' pictures, never pruned: nothing could draw them again
SWEEP_INTERVAL_S = 3600.0  # how often the age limit is applied (the budget is also checked as jobs finish)
LOW_WATER = 0.9  # a budget sweep frees down to 90 % of it, so the next job does not start another


@dataclass(frozen=True, slots=True)
class StoredFile:
    path: str  # relative to DATA_DIR, as the images table records it
    job_id: int | None  # None: not in a job's folder, so never pruned
    size: int
    mtime: float


@dataclass(frozen=True, slots=True)
class StorageUsage:
    """What the images folder holds and how much room is left, for /config show and metrics."""

    image_bytes: int
    image_files: int
    oldest_image: datetime | None  # the oldest file still kept
    input_bytes: int  # members' pictures (inputs/): counted here, never pruned
    input_files: int
    free_bytes: int  # on the disk that holds DATA_DIR
    disk_bytes: int


@dataclass(frozen=True, slots=True)
class RetentionPolicy:
    max_age_days: int | None = None
    max_bytes: int | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RetentionPolicy:
        max_gb = settings.image_store_max_gb
        return cls(settings.image_retention_days, None if max_gb is None else int(max_gb * 1e9))

    @property
    def enabled(self) -> bool:
        return self.max_age_days is not None or self.max_bytes is not None

    def describe(self) -> str:
        rules = []
        if self.max_age_days is not None:
            rules.append(f"images older than {self.max_age_days} days are deleted")
        if self.max_bytes is not None:
            rules.append(f"the folder is kept under {format_bytes(self.max_bytes)}")
        return "; ".join(rules) or "images are kept forever"


@dataclass(frozen=True, slots=True)
class PruneReport:
    jobs: tuple[int, ...]  # the jobs whose files went (or, in a dry run, would go)
    files: int
    freed_bytes: int
    bytes_before: int
    bytes_after: int
    dry_run: bool

    def summary(self) -> str:
        folder = f"images folder {format_bytes(self.bytes_before)} → {format_bytes(self.bytes_after)}"
        if not self.jobs:
            return f"nothing to delete: images folder {format_bytes(self.bytes_before)}"
        what = f"the images of {len(self.jobs)} jobs ({self.files} files, {format_bytes(self.freed_bytes)})"
        return f"would delete {what}; {folder}" if self.dry_run else f"deleted {what}; {folder}"


def format_bytes(size: float) -> str:
    """Decimal units, as IMAGE_STORE_MAX_GB counts them."""
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


# -- the folder (blocking: run these in a thread) --------------------------------------------------


def scan(data_dir: Path) -> list[StoredFile]:
    """Every file under DATA_DIR/images, with the job whose folder holds it."""
    root = data_dir / IMAGES_DIR
    found = []
    for folder, _, names in os.walk(root):
        relative = PurePosixPath(Path(folder).relative_to(data_dir).as_posix())
        job_id = int(relative.name) if relative.parent.name == IMAGES_DIR and relative.name.isdigit() else None
        for name in names:
            try:
                stat = os.stat(os.path.join(folder, name))
            except FileNotFoundError:  # deleted while we looked
                continue
            found.append(StoredFile(str(relative / name), job_id, stat.st_size, stat.st_mtime))
    return found


def _input_sizes(data_dir: Path) -> list[int]:
    sizes = []
    for entry in os.scandir(data_dir / INPUTS_DIR) if (data_dir / INPUTS_DIR).is_dir() else ():
        with contextlib.suppress(FileNotFoundError):
            if entry.is_file():
                sizes.append(entry.stat().st_size)
    return sizes


def measure(data_dir: Path) -> StorageUsage:
    files = scan(data_dir)
    inputs = _input_sizes(data_dir)
    disk = shutil.disk_usage(_existing(data_dir))
    oldest = min((f.mtime for f in files), default=None)
    return StorageUsage(
        image_bytes=sum(f.size for f in files),
        image_files=len(files),
        oldest_image=None if oldest is None else datetime.fromtimestamp(oldest, UTC),
        input_bytes=sum(inputs),
        input_files=len(inputs),
        free_bytes=disk.free,
        disk_bytes=disk.total,
    )


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _delete(data_dir: Path, files: Iterable[StoredFile]) -> None:
    folders = set()
    for file in files:
        path = data_dir / file.path
        path.unlink(missing_ok=True)
        folders.add(path.parent)
    for folder in folders:
        with contextlib.suppress(OSError):  # not empty: something new was written there meanwhile
            folder.rmdir()


def _size_of(data_dir: Path, paths: Iterable[str]) -> int:
    total = 0
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            total += (data_dir / path).stat().st_size
    return total


# -- deciding ----------------------------------------------------------------------------------------


def choose(
    files: list[StoredFile], settled: set[int], in_use: set[str], policy: RetentionPolicy, now: float
) -> list[tuple[int, list[StoredFile]]]:
    """The jobs whose files go, oldest first: past the age limit, then as many as the budget needs.

    A job is as old as its newest file, so a job drawn again for a member starts over.
    """
    by_job: dict[int, list[StoredFile]] = {}
    for file in files:
        if file.job_id in settled and file.path not in in_use:
            by_job.setdefault(file.job_id, []).append(file)
    oldest_first = sorted(by_job.items(), key=lambda item: (max(f.mtime for f in item[1]), item[0]))
    cutoff = None if policy.max_age_days is None else now - policy.max_age_days * 86400
    remaining = sum(f.size for f in files)
    target = None
    if policy.max_bytes is not None and remaining > policy.max_bytes:
        target = policy.max_bytes * LOW_WATER
    chosen = []
    for job_id, job_files in oldest_first:
        too_old = cutoff is not None and max(f.mtime for f in job_files) < cutoff
        if not too_old and (target is None or remaining <= target):
            break  # every later job is younger, and the budget is met
        chosen.append((job_id, job_files))
        remaining -= sum(f.size for f in job_files)
    return chosen


async def prune(
    store: Store, data_dir: Path, policy: RetentionPolicy, *, dry_run: bool = False, now: float | None = None
) -> PruneReport:
    """Delete (or, with `dry_run`, only list) what `policy` says should go. Job rows are kept.

    What counts as settled and in use is read once, before deleting: a finished job never runs
    again, and a variation queued on a job a moment after that read draws its source again.
    """
    files = await asyncio.to_thread(scan, data_dir)
    job_ids = {f.job_id for f in files if f.job_id is not None}
    settled = await store.settled_jobs(sorted(job_ids)) if job_ids else set()
    in_use = await store.files_in_use()
    chosen = choose(files, settled, in_use, policy, time.time() if now is None else now)
    doomed = [f for _, job_files in chosen for f in job_files]
    if doomed and not dry_run:
        await asyncio.to_thread(_delete, data_dir, doomed)
    before = sum(f.size for f in files)
    freed = sum(f.size for f in doomed)
    return PruneReport(
        jobs=tuple(job_id for job_id, _ in chosen),
        files=len(doomed),
        freed_bytes=freed,
        bytes_before=before,
        bytes_after=before - freed,
        dry_run=dry_run,
    )


async def storage_usage(data_dir: Path) -> StorageUsage:
    """The images folder's size, its oldest image, members' pictures and the free disk space (in a thread)."""
    return await asyncio.to_thread(measure, data_dir)


# -- the bot's background sweep ---------------------------------------------------------------------


class ImageRetention:
    """Applies the retention policy while the bot runs: at start, every hour, and as soon as new
    results take the folder over its budget (a running tally, so no walk after every job)."""

    def __init__(self, store: Store, data_dir: Path, policy: RetentionPolicy) -> None:
        self.store = store
        self.data_dir = data_dir
        self.policy = policy
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._new_files: list[str] = []
        self._tally: int | None = None  # the folder's size at the last sweep, plus results since
        self._sweep_above: float = float("inf")

    def start(self) -> None:
        if not self.policy.enabled:
            return
        log.info("image retention: %s", self.policy.describe())
        self._task = asyncio.create_task(self._run(), name="dreamgrid-image-retention")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    def saved(self, paths: Iterable[str]) -> None:
        """A job's results were written (paths relative to DATA_DIR)."""
        if self._task is None or self.policy.max_bytes is None:
            return
        self._new_files.extend(paths)
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_sweep = loop.time()
        while True:
            if loop.time() >= next_sweep or (self._tally is not None and self._tally > self._sweep_above):
                await self._sweep()
                next_sweep = loop.time() + SWEEP_INTERVAL_S
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(next_sweep - loop.time()):
                    await self._wake.wait()
            self._wake.clear()
            new, self._new_files = self._new_files, []
            if new and self._tally is not None:
                self._tally += await asyncio.to_thread(_size_of, self.data_dir, new)

    async def _sweep(self) -> None:
        try:
            report = await prune(self.store, self.data_dir, self.policy)
        except Exception:
            log.exception("the image retention sweep failed; it runs again within the hour")
            self._tally = None
            return
        if report.jobs:
            log.info("image retention: %s", report.summary())
        self._tally = report.bytes_after
        budget = self.policy.max_bytes
        if budget is not None:
            # What is left over the budget belongs to unfinished jobs or to no job: sweep again
            # only once new results have added another tenth of the budget.
            self._sweep_above = max(budget, report.bytes_after + budget * (1 - LOW_WATER))
            if report.bytes_after > budget:
                log.warning(
                    "the images folder is %s, over its %s budget: the rest is in use by unfinished jobs"
                    " or is not a job's image",
                    format_bytes(report.bytes_after),
                    format_bytes(budget),
                )
