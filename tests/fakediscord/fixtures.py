"""pytest fixtures: `fake_discord` starts a fake Discord per test and fails the test on any violation."""

from __future__ import annotations

import logging

import pytest

from . import FakeDiscord, discord_py_pointed_at


class _BotErrors(logging.Handler):
    """Turns discord.py's "Ignoring exception in ..." logs (an unhandled error in a command, view,
    modal or event) into violations, so a crash inside the bot fails the test with its traceback."""

    def __init__(self, fake: FakeDiscord) -> None:
        super().__init__(logging.ERROR)
        self.fake = fake

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if not message.startswith("Ignoring exception"):
            return
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            cause = exc.__cause__ or exc
            message += f": {type(cause).__name__}: {cause}"
        self.fake.violate("bot-error", message)


@pytest.fixture
async def fake_discord():
    """A running FakeDiscord with discord.py pointed at it.

    At teardown the test fails if the bot broke a rule: a request the spec rejects, a limit Discord
    enforces, an interaction left unacknowledged, an unhandled exception in a command/view/event.
    Wrap deliberate mistakes in `with fake_discord.expect_violations("custom_id"):`.
    """
    async with FakeDiscord() as fake:
        handler = _BotErrors(fake)
        logger = logging.getLogger("discord")
        logger.addHandler(handler)
        try:
            with discord_py_pointed_at(fake):
                yield fake
                fake.check_interactions_acknowledged()
                if fake.violations:
                    pytest.fail(fake.report(), pytrace=False)
        finally:
            logger.removeHandler(handler)
