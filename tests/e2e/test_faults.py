"""The fault suite: storage full, read-only data, engine errors and Discord outages.

Each test breaks one thing the bot depends on while members use it, and checks what they see:
every accepted job reaches an end its member is told about, once, and the bot recovers when
the fault clears. The figures are summarised in RELIABILITY.md.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from bot import scheduler as scheduler_module
from engine.fake import FakeEngine
from tests.e2e.test_admin import finished, refusal
from tests.fakediscord import FakeDiscord
from tests.harness import eventually, running_bot

ROOT = Path(__file__).resolve().parents[2]


def _disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


async def test_a_full_disk_fails_the_job_visibly_and_the_row_catches_up_when_space_returns(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    monkeypatch.setattr(scheduler_module, "STORAGE_RETRY_S", 0.1)
    async with running_bot(fake, tmp_path) as bot:
        full = True
        record_failure = bot.store.fail

        async def fail_unless_room(*args, **kwargs):
            if full:
                raise sqlite3.OperationalError("database or disk is full")
            return await record_failure(*args, **kwargs)

        monkeypatch.setattr(scheduler_module, "save_png", _disk_full)
        monkeypatch.setattr(bot.store, "fail", fail_unless_room)
        ix = await fake.slash("imagine", prompt="a red fox")
        await ix.ack()
        shown = await ix.wait_for_edit(lambda m: ":warning:" in m.content)
        assert "There was no room left to save this job's images" in shown.content
        assert shown.content.endswith("(job 1)") and not shown.buttons  # no Cancel under a finished job
        assert (await bot.store.get_job(1)).status == "running"  # nothing recorded yet: the disk is full

        full = False  # space returns
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.status == "failed", timeout=10)
        assert job.error.startswith("There was no room left")
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at, timeout=10)
        assert job.result_message_id == shown.id
        assert len(fake.channel_messages()) == 1  # told once, not again when the row caught up

        monkeypatch.undo()  # and the next job runs as usual
        await finished(await _imagine(fake, "a blue bird"))


async def test_new_jobs_are_refused_before_the_disk_fills(fake_discord: FakeDiscord, tmp_path: Path):
    free_mib = os.statvfs(tmp_path).f_bavail * os.statvfs(tmp_path).f_frsize // (1024 * 1024)
    async with running_bot(fake_discord, tmp_path, min_free_disk_mb=free_mib + 1024) as bot:
        assert await refusal(fake_discord, "a red fox") == (
            "The bot's storage is nearly full, so it isn't taking new jobs right now. Please try later."
        )
        assert await bot.store.get_job(1) is None


async def test_an_unexpected_engine_error_fails_one_job_and_the_next_one_runs(
    fake_discord: FakeDiscord, tmp_path: Path
):
    class BrokenEngine(FakeEngine):
        async def render(self, request, *, progress=None):
            if "oom" in request.prompt:
                raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
            return await super().render(request, progress=progress)

    async with running_bot(fake_discord, tmp_path, engine=BrokenEngine(models=["fake"])) as bot:
        bad = await _imagine(fake_discord, "oom please")
        failed = await bad.wait_for_edit(lambda m: ":warning:" in m.content)
        assert "Something went wrong while drawing this; it has been logged." in failed.content
        assert "CUDA" not in failed.content  # the engine's internals stay in the log
        await finished(await _imagine(fake_discord, "a calm lake"))
        assert [(await bot.store.get_job(i)).status for i in (1, 2)] == ["failed", "done"]


async def test_a_discord_outage_during_delivery_is_waited_out_and_shown_once(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    monkeypatch.setattr(scheduler_module, "REDELIVERY_INTERVAL_S", 0.5)
    async with running_bot(fake, tmp_path) as bot:
        ix = await _imagine(fake, "a red fox")
        await ix.wait_for_edit(lambda m: "%)" in m.content)
        # Every webhook edit and channel post fails for a stretch, the way Discord's edge does in an incident.
        outage = fake.fail_requests(503, seconds=3)
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.status == "done", timeout=10)
        assert job.delivered_at is None
        grid = await finished(ix)  # retried after the outage
        assert outage.hits and grid.embeds
        job = await eventually(lambda: bot.store.get_job(1), lambda job: job.delivered_at, timeout=5)
        assert job.result_message_id == grid.id
        assert len(fake.channel_messages()) == 1


@pytest.mark.parametrize("data_dir", ["/sys/dreamgrid-data", "{tmp}/a-file/data"])
def test_a_data_dir_that_cant_be_written_stops_the_bot_with_one_line(tmp_path: Path, data_dir: str):
    (tmp_path / "a-file").write_text("not a folder")
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    done = subprocess.run(
        [sys.executable, "-m", "bot.cli", "run"],
        cwd=tmp_path,
        env={
            **env,
            "PYTHONPATH": str(ROOT),
            "DISCORD_TOKEN": "x.y.z",
            "ENGINE": "fake",
            "MODEL": "fake",
            "DATA_DIR": data_dir.format(tmp=tmp_path),
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert done.stderr.startswith(f"dreamgrid: DATA_DIR {data_dir.format(tmp=tmp_path)} can't be written to: ")
    assert "Discord" not in done.stderr and "Traceback" not in done.stderr


async def _imagine(fake: FakeDiscord, prompt: str):
    ix = await fake.slash("imagine", prompt=prompt)
    await ix.wait_for_answer()  # "Waiting to start" or a refusal
    return ix
