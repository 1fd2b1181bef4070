"""What the fake records: requests, violations, and one record per injected interaction."""

# Test helpers take a `timeout` on purpose: each wait fails with a readable assertion at its deadline.
# ruff: noqa: ASYNC109

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .models import Attachment, Channel, Guild, Message, User

if TYPE_CHECKING:
    from .server import FakeDiscord

ACK_DEADLINE = 3.0


@dataclass
class Upload:
    """One `files[n]` part of a multipart request."""

    index: int
    filename: str
    content_type: str | None
    data: bytes


@dataclass
class RequestRecord:
    method: str
    path: str  # e.g. /channels/123/messages
    route: str  # spec template, e.g. /channels/{channel_id}/messages ("?" if unknown)
    query: dict[str, str]
    json: Any
    files: list[Upload]
    at: float
    status: int = 0
    response: Any = None
    violations: list[str] = field(default_factory=list)
    refused: bool = False  # answered 400 for breaking a limit (reported once)

    @property
    def key(self) -> str:
        return f"{self.method} {self.route}"

    def __repr__(self) -> str:
        problems = (" !" + "; ".join(self.violations)) if self.violations else ""
        return f"<{self.method} {self.path} -> {self.status}{problems}>"


@dataclass
class Violation:
    kind: str  # "spec", "rule", "ack", "unknown-route", "auth", ...
    message: str
    request: RequestRecord | None = None

    def __str__(self) -> str:
        where = f" [{self.request.method} {self.request.path}]" if self.request else ""
        return f"{self.kind}: {self.message}{where}"


@dataclass
class Callback:
    """The bot's initial response to an interaction."""

    type: int  # 4 message, 5 deferred message, 6 deferred update, 7 update, 8 autocomplete, 9 modal
    data: dict[str, Any]
    elapsed: float  # seconds from dispatch to callback

    @property
    def ephemeral(self) -> bool:
        return bool((self.data.get("flags") or 0) & 64)


class Interaction:
    """One user action injected as INTERACTION_CREATE, and everything the bot did in answer."""

    def __init__(
        self,
        fake: FakeDiscord,
        *,
        type: int,
        payload: dict[str, Any],
        user: User,
        channel: Channel,
        guild: Guild | None,
        message: Message | None = None,
    ) -> None:
        self.fake = fake
        self.id = int(payload["id"])
        self.token: str = payload["token"]
        self.type = type
        self.payload = payload
        self.user = user
        self.channel = channel
        self.guild = guild
        self.message = message  # the message a component sat on / a modal was opened from
        self.created = time.monotonic()
        self.callbacks: list[Callback] = []
        self.original: Message | None = None
        self.followups: list[Message] = []
        self.expired = False
        self.reported = False  # already reported as never acknowledged

    def __repr__(self) -> str:
        name = self.payload.get("data", {}).get("name") or self.payload.get("data", {}).get("custom_id")
        return f"<Interaction type={self.type} {name!r} id={self.id} response={self.response_type}>"

    # ---- state -------------------------------------------------------------------------------
    @property
    def callback(self) -> Callback | None:
        return self.callbacks[0] if self.callbacks else None

    @property
    def response_type(self) -> int | None:
        return self.callback.type if self.callback else None

    @property
    def acked_in(self) -> float | None:
        return self.callback.elapsed if self.callback else None

    @property
    def ephemeral(self) -> bool:
        """Whether what the user was shown is only theirs (a deleted "thinking…" gives way to its follow-up)."""
        if self.original is not None and self.original.deleted and self.followups:
            return self.followups[0].ephemeral
        if self.original is not None and self.original is not self.message:
            return self.original.ephemeral
        return bool(self.callback and self.callback.ephemeral)

    @property
    def modal(self) -> dict[str, Any] | None:
        """The modal the bot opened (callback type 9 data), if any."""
        return self.callback.data if self.callback and self.callback.type == 9 else None

    @property
    def choices(self) -> list[dict[str, Any]] | None:
        """Autocomplete choices the bot answered (callback type 8), if any."""
        return self.callback.data.get("choices", []) if self.callback and self.callback.type == 8 else None

    @property
    def messages(self) -> list[Message]:
        """The original response (if any) followed by follow-ups."""
        first = [self.original] if self.original is not None and self.original is not self.message else []
        return first + self.followups

    def expire(self) -> None:
        """Make the token invalid, as Discord does 15 minutes after the interaction."""
        self.expired = True

    # ---- waiting -----------------------------------------------------------------------------
    async def ack(self, timeout: float = ACK_DEADLINE) -> Callback:
        """Wait for the initial response; fail loudly if it takes longer than Discord's 3 s."""
        try:
            await self.fake.wait_for(lambda: self.callback, timeout=timeout, what=f"acknowledgement of {self!r}")
        except AssertionError:
            raise AssertionError(
                f"{self!r} was not acknowledged within {timeout:.1f}s (Discord allows {ACK_DEADLINE:.0f}s); "
                f"requests so far: {self.fake.requests[-5:]}"
            ) from None
        assert self.callback is not None
        return self.callback

    async def wait_for_response(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0
    ) -> Message:
        """Wait until the original response message exists (and satisfies `predicate`)."""

        def ready():
            m = self.original
            return m if m is not None and (predicate is None or predicate(m)) else None

        return await self.fake.wait_for(ready, timeout=timeout, what=f"original response of {self!r}")

    async def wait_for_edit(self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0) -> Message:
        """Wait for the original response to satisfy `predicate`; without one, for its next edit."""
        start = self.original.edits if self.original is not None else -1

        def ready():
            m = self.original
            if m is None:
                return None
            if predicate is None:
                return m if m.edits > start else None
            return m if predicate(m) else None

        return await self.fake.wait_for(ready, timeout=timeout, what=f"edit of the original response of {self!r}")

    async def wait_for_followup(
        self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0
    ) -> Message:
        def ready():
            return next((m for m in self.followups if predicate is None or predicate(m)), None)

        return await self.fake.wait_for(ready, timeout=timeout, what=f"follow-up of {self!r}")

    async def wait_for_reply(self, predicate: Callable[[Message], Any] | None = None, timeout: float = 10.0) -> Message:
        """The first message this interaction produced (response or follow-up) matching `predicate`."""

        def ready():
            return next((m for m in self.messages if not m.loading and (predicate is None or predicate(m))), None)

        return await self.fake.wait_for(ready, timeout=timeout, what=f"reply to {self!r}")

    async def wait_for_answer(self, timeout: float = 10.0) -> Message:
        """The first thing the user reads after the acknowledgement: a deferral filled in, or a reply."""
        await self.ack()

        def ready():
            return next((m for m in self.messages if not m.loading and not m.deleted), None)

        return await self.fake.wait_for(ready, timeout=timeout, what=f"the answer to {self!r}")

    async def wait_for_choices(self, timeout: float = ACK_DEADLINE) -> list[dict[str, Any]]:
        cb = await self.ack(timeout)
        assert cb.type == 8, f"expected autocomplete result (8), got callback type {cb.type}"
        return cb.data.get("choices", [])


__all__ = ["Attachment", "Callback", "Interaction", "RequestRecord", "Upload", "Violation"]
