"""The real bot (`python -m bot`) as a subprocess against the fake Discord: for crash tests and load benchmarks."""

from __future__ import annotations

import asyncio
import os
import re
import resource
import signal
import sys
from collections import Counter
from pathlib import Path
from typing import Any

from tests.fakediscord import FakeDiscord, Interaction

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """`python -m bot` with the fake engine; its data directory outlives the process."""

    def __init__(
        self,
        fake: FakeDiscord,
        data_dir: Path,
        *,
        root: Path = ROOT,
        open_files_limit: int | None = None,
        **settings: Any,
    ) -> None:
        """`root`: the checkout whose bot to run (another one gives a baseline for benchmarks);
        `open_files_limit`: the process's RLIMIT_NOFILE, as an operator's ulimit would set it."""
        self.fake = fake
        self.root = root
        self.open_files_limit = open_files_limit
        self.env = {
            **os.environ,
            **fake.env(),
            "PYTHONPATH": str(root),
            "DATA_DIR": str(data_dir),
            "ENGINE": "fake",
            "MODEL": "fake",
            "STEPS": "8",
            "PROGRESS_INTERVAL_S": "0.5",
            "LOG_LEVEL": "INFO",
            **{key.upper(): str(value) for key, value in settings.items()},
        }
        self.log = data_dir / "bot.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        identified = self.fake.identifies
        with open(self.log, "ab") as log:  # noqa: ASYNC230 - once per start, before the bot exists
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                env=self.env,
                cwd=self.root,
                stdout=log,
                stderr=log,
                preexec_fn=self._limit_open_files if self.open_files_limit else None,
            )
        # Ready once it identified and registered its commands (the fake infers nothing then).
        await self.fake.wait_for(
            lambda: self.fake.identifies > identified and self.fake.connected and self.fake.find_command("imagine"),
            timeout=20,
            what="the bot subprocess to connect",
        )

    def _limit_open_files(self) -> None:
        assert self.open_files_limit is not None
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.open_files_limit, self.open_files_limit))

    def open_files(self) -> int:
        """How many file descriptors the bot holds now."""
        assert self.proc is not None
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    async def kill(self) -> None:
        """SIGKILL: no cleanup, no requeue, exactly like a crash or the OOM killer."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()
        await self.fake.wait_until_disconnected()

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()

    def errors(self) -> list[str]:
        """Lines of the bot's log that mean a bug (an unhandled exception somewhere)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        bad = ("Ignoring exception", "Task exception was never retrieved", "Traceback")
        return [line for line in text.splitlines() if any(b in line for b in bad)]


FOOTER = re.compile(r"^/show (\d+) ")
ENDED = re.compile(r"\(job (\d+)\)$")


def job_id_of(ix: Interaction) -> int:
    """The job behind an /imagine, from the Cancel button its message had (or still has)."""
    m = ix.original
    for components in [m.components, *(old["components"] for old in m.history)]:
        if found := re.search(r"dg:cancel:(\d+)", str(components)):
            return int(found.group(1))
    raise AssertionError(f"{ix!r} never showed a Cancel button")


def settled(ix: Interaction) -> bool:
    """The job's own message shows its end: the grid, the failure, or where the result went."""
    m = ix.original
    return bool(m.embeds and m.buttons) or "\nFinished: " in m.content or bool(ENDED.search(m.content))


def final_deliveries(fake: FakeDiscord) -> Counter[int]:
    """Job id -> how many successful requests showed that job's final state (grid, failure, cancel)."""
    shown: Counter[int] = Counter()
    for rec in fake.requests:
        if rec.method not in ("POST", "PATCH") or not 200 <= rec.status < 300 or not isinstance(rec.json, dict):
            continue
        if not (rec.route.startswith("/webhooks/") or rec.route.startswith("/channels/{channel_id}/messages")):
            continue
        for embed in rec.json.get("embeds") or []:
            if m := FOOTER.match((embed.get("footer") or {}).get("text", "")):
                shown[int(m.group(1))] += 1
        if m := ENDED.search(rec.json.get("content") or ""):
            shown[int(m.group(1))] += 1
    return shown
