"""pytest fixtures: `fake_discord` starts a fake Discord per test and fails the test on any violation."""

from __future__ import annotations

import pytest

from . import FakeDiscord, discord_py_pointed_at


@pytest.fixture
async def fake_discord():
    """A running FakeDiscord with discord.py pointed at it.

    At teardown the test fails if the bot broke a rule: a request the spec rejects, a limit Discord
    enforces, an interaction left unacknowledged. Wrap deliberate mistakes in
    `with fake_discord.expect_violations("custom_id"):`.
    """
    async with FakeDiscord() as fake:
        with discord_py_pointed_at(fake):
            yield fake
            fake.check_interactions_acknowledged()
            if fake.violations:
                pytest.fail(fake.report(), pytrace=False)
