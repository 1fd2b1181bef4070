"""The rows the store reads and writes, as dataclasses: jobs and their images."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from bot.spec import JobSpec

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def parse_time(value: str | None) -> datetime | None:
    return parse_stored_time(value) if value else None


def parse_stored_time(value: str) -> datetime:
    """A time from a NOT NULL column."""
    return datetime.strptime(value, TIME_FORMAT).replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Job:
    id: int
    kind: str  # a name in bot.kinds.KINDS
    parent_id: int | None
    parent_index: int | None
    user_id: int
    guild_id: int | None
    channel_id: int
    prompt: str
    spec: JobSpec
    seeds: list[int]
    model: str
    status: str
    progress: float
    error: str | None
    attempts: int
    gpu_seconds: float
    application_id: int | None
    interaction_token: str | None
    token_expires_at: datetime | None
    message_id: int | None
    result_channel_id: int | None
    result_message_id: int | None
    delivered_at: str | None
    created_at: str
    started_at: str | None
    finished_at: str | None
    mode: str = "fast"  # "fast" or "relax": which queue it waits in (migration 0004)

    @classmethod
    def from_row(cls, row: Any) -> Job:
        values = dict(row)
        values["spec"] = JobSpec.from_json(values.pop("params"))
        values["seeds"] = json.loads(values["seeds"])
        values["token_expires_at"] = parse_time(values["token_expires_at"])
        return cls(**values)

    @property
    def token_usable(self) -> bool:
        """Whether the interaction webhook can still edit this job's message (Discord: 15 min)."""
        return (
            self.interaction_token is not None
            and self.token_expires_at is not None
            and datetime.now(UTC) < self.token_expires_at
        )


@dataclass(frozen=True, slots=True)
class NewJob:
    kind: str
    user_id: int
    guild_id: int | None
    channel_id: int
    prompt: str
    spec: JobSpec
    seeds: Sequence[int]
    model: str
    parent_id: int | None = None
    parent_index: int | None = None
    application_id: int | None = None
    interaction_token: str | None = None
    mode: str = "fast"  # "fast" or "relax"
    token_lifetime_s: float = 14 * 60  # Discord allows 15 min; keep a margin for slow edits


@dataclass(frozen=True, slots=True)
class ImageRow:
    job_id: int
    idx: int
    path: str
    width: int
    height: int
    seed: int
    flagged: bool = False  # the safety checker flagged it: posted as a spoiler
