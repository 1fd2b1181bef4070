"""The real bot (`python -m bot`) as a subprocess against the fake Discord: for crash tests and load benchmarks."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import Any

from tests.fakediscord import FakeDiscord

ROOT = Path(__file__).resolve().parents[2]


class BotProcess:
    """`python -m bot` with the fake engine; its data directory outlives the process."""

    def __init__(self, fake: FakeDiscord, data_dir: Path, **settings: Any) -> None:
        self.fake = fake
        self.env = {
            **os.environ,
            **fake.env(),
            "PYTHONPATH": str(ROOT),
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

    async def start(self, timeout: float = 20.0) -> None:
        identified = self.fake.identifies
        data_dir = Path(self.env["DATA_DIR"])
        data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", env=self.env, cwd=ROOT, stdout=log, stderr=log
            )
        # Ready once it identified and registered its commands (the fake infers nothing then).
        await self.fake.wait_for(
            lambda: self.fake.identifies > identified and self.fake.connected and self.fake.find_command("imagine"),
            timeout=timeout,
            what="the bot subprocess to connect",
        )

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
