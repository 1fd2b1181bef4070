"""A loopback Discord: REST under /api/v10, a JSON gateway at /gateway, a CDN at /attachments.

Everything the bot sends is recorded and checked against Discord's OpenAPI spec and Discord's own
limits; problems land in `fake.violations` and fail the test at teardown (see fixtures.py).
"""

# Test helpers take a `timeout` on purpose: each wait fails with a readable assertion at its deadline.
# ruff: noqa: ASYNC109

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import secrets
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from typing import Any

from aiohttp import WSMsgType, web

from . import rules
from .inject import InjectMixin
from .models import Attachment, Channel, Guild, Member, Message, Overwrite, P, Role, User, iso_now, snowflake
from .records import ACK_DEADLINE, Callback, Interaction, RequestRecord, Upload, Violation
from .spec import Route, compile_template, load_spec, match_route

log = logging.getLogger(__name__)

DEFAULT_ATTACHMENT_LIMIT = 10 * 1024 * 1024


class DiscordError(Exception):
    """Raised by a handler to answer with Discord's error JSON."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _unknown_message() -> DiscordError:
    return DiscordError(404, 10008, "Unknown Message")


def _invalid_token() -> DiscordError:
    return DiscordError(401, 50027, "Invalid Webhook Token")


class _Session:
    def __init__(self, ws: web.WebSocketResponse) -> None:
        self.ws = ws
        self.seq = 0
        self.session_id = secrets.token_hex(16)
        self.identified = False

    async def dispatch(self, event: str, data: Any) -> None:
        self.seq += 1
        await self.ws.send_str(json.dumps({"op": 0, "t": event, "s": self.seq, "d": data}))


class _RateRule:
    def __init__(self, limit: int, per: float, method: str | None, route: str | None, announce: bool) -> None:
        self.limit, self.per, self.method, self.route, self.announce = limit, per, method, route, announce
        self.hits: dict[tuple, deque[float]] = defaultdict(deque)

    def applies(self, method: str, route: str) -> bool:
        return (self.method is None or self.method == method) and (self.route is None or self.route == route)


class Outage:
    """Requests Discord answers with an error: the next `count`, or all for `seconds` (see fail_requests)."""

    def __init__(
        self,
        status: int,
        method: str | None,
        route: str | None,
        count: int | None,
        seconds: float | None,
        after_applying: bool,
        code: int = 0,
    ) -> None:
        self.status, self.method, self.route, self.after_applying = status, method, route, after_applying
        self.code = code
        self.left = count
        self.until = time.monotonic() + seconds if seconds is not None else None
        self.hits: list[RequestRecord] = []

    @property
    def over(self) -> bool:
        return (self.left is not None and self.left <= 0) or (self.until is not None and time.monotonic() >= self.until)

    def take(self, rec: RequestRecord) -> bool:
        if self.over or (self.method and self.method != rec.method) or (self.route and self.route != rec.route):
            return False
        if self.left is not None:
            self.left -= 1
        self.hits.append(rec)
        return True

    def end(self) -> None:
        self.left = 0


class FakeDiscord(InjectMixin):
    """The fake server and its world. Use `async with FakeDiscord() as fake:` or the `fake_discord` fixture."""

    def __init__(self, *, attachment_size_limit: int = DEFAULT_ATTACHMENT_LIMIT) -> None:
        self.spec = load_spec()
        self.token = f"fake.{secrets.token_urlsafe(24)}"
        self.application_id = snowflake()
        self.application_flags = 1 << 23
        self.attachment_size_limit = attachment_size_limit
        self.bot_user = User(self.application_id, "dreamgrid", bot=True)
        self.users: dict[int, User] = {self.bot_user.id: self.bot_user}
        self.guilds: dict[int, Guild] = {}
        self.channels: dict[int, Channel] = {}
        self.messages: dict[int, Message] = {}
        self.commands: dict[int, dict[str, Any]] = {}
        self.guild_commands: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
        self.interactions: dict[int, Interaction] = {}
        self._uploads: dict[int, Attachment] = {}
        self.cdn_downloads: list[Attachment] = []  # every attachment the bot downloaded, in order
        self._by_token: dict[str, Interaction] = {}
        self.requests: list[RequestRecord] = []
        self.violations: list[Violation] = []
        self.unknown_routes: list[str] = []
        self.gateway_events: list[dict[str, Any]] = []  # what the bot sent on the gateway
        self._expected: list[tuple[list[re.Pattern[str]], list[Violation]]] = []
        self._sessions: list[_Session] = []
        self._rate_rules: list[_RateRule] = []
        self._outages: list[Outage] = []
        self._nonces: dict[tuple[int, str], Message] = {}  # (channel id, nonce) -> the message it created
        self._changed = asyncio.Condition()
        self.identifies = 0  # IDENTIFYs seen; a restarted bot identifies again
        self.resumes = 0
        self._runner: web.AppRunner | None = None
        self.port = 0
        self._routes: list[tuple[Route, Callable[..., Awaitable[Any]]]] = []
        self._register_routes()
        self._build_default_world()

    # ---- world -------------------------------------------------------------------------------
    def _build_default_world(self) -> None:
        self.owner = self.add_user("owner")
        self.guild = self.add_guild("Dream Guild", owner=self.owner)
        self.channel = self.add_channel("general")
        self.admin_role = self.add_role("Admin", P.MANAGE_GUILD)
        self.admin = self.add_member(self.add_user("admin"), roles=[self.admin_role])
        self.alice = self.add_member(self.add_user("alice"))
        self.bob = self.add_member(self.add_user("bob"))

    def add_user(self, username: str, *, global_name: str | None = None, locale: str = "en-US") -> User:
        user = User(snowflake(), username, global_name or username.title(), locale=locale)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: User) -> Guild:
        guild = Guild(snowflake(), name, owner.id)
        self.guilds[guild.id] = guild
        bot_role = Role(snowflake(), self.bot_user.username, P.EVERYONE | P.MANAGE_MESSAGES, position=1, managed=True)
        guild.roles.append(bot_role)
        guild.members[self.bot_user.id] = Member(self.bot_user, guild, [bot_role])
        guild.members[owner.id] = Member(owner, guild)
        return guild

    def add_role(self, name: str, permissions: int = 0, *, guild: Guild | None = None) -> Role:
        guild = guild or self.guild
        role = Role(snowflake(), name, permissions, position=len(guild.roles))
        guild.roles.append(role)
        return role

    def add_channel(self, name: str, *, guild: Guild | None = None, type: int = 0) -> Channel:
        guild = guild or self.guild
        channel = Channel(snowflake(), name, type, guild, position=len(guild.channels))
        guild.channels.append(channel)
        self.channels[channel.id] = channel
        return channel

    def add_member(
        self, user: User | str, *, roles: list[Role] = (), guild: Guild | None = None, nick: str | None = None
    ) -> User:
        """Make `user` (or a new user with that name) a member of `guild`; returns the user."""
        guild = guild or self.guild
        if isinstance(user, str):
            user = self.add_user(user)
        guild.members[user.id] = Member(user, guild, list(roles), nick)
        return user

    def make_private(self, channel: Channel, *members: User) -> Channel:
        """Only `members` (and the bot) may view `channel`: @everyone is denied View Channel there.
        Call `announce_guild()` afterwards if the bot is already connected."""
        assert channel.guild is not None
        channel.overwrites = [
            Overwrite(channel.guild.id, 0, deny=P.VIEW_CHANNEL),
            *(Overwrite(user.id, 1, allow=P.VIEW_CHANNEL) for user in (self.bot_user, *members)),
        ]
        return channel

    def dm(self, user: User) -> Channel:
        """The DM channel between the bot and `user` (created on first use)."""
        for ch in self.channels.values():
            if ch.is_dm and ch.recipient is user:
                return ch
        ch = Channel(snowflake(), None, 1, None, recipient=user)
        self.channels[ch.id] = ch
        return ch

    def set_bot_permissions(self, permissions: int, *, guild: Guild | None = None) -> None:
        guild = guild or self.guild
        member = guild.members[self.bot_user.id]
        member.roles[0].permissions = permissions
        guild.everyone.permissions &= permissions

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/attachments/{channel}/{id}/{filename}", self._cdn)
        app.router.add_route("*", "/api/v10/{tail:.*}", self._rest)
        app.router.add_route("*", "/{tail:.*}", self._stray)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        for s in list(self._sessions):
            with contextlib.suppress(Exception):
                await s.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return f"{self.base_url}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    def env(self) -> dict[str, str]:
        """Environment for a bot run as a subprocess (see point_discord_py_at)."""
        return {"DISCORD_API_BASE": self.api_base, "DISCORD_GATEWAY_URL": self.gateway_url, "DISCORD_TOKEN": self.token}

    @contextlib.asynccontextmanager
    async def running(self, bot: Any, *, timeout: float = 10.0, fast_ready: bool = True):
        """Run a discord.py client against the fake until the block ends; waits for `on_ready`.

        `fast_ready` drops discord.py's guild_ready_timeout (2 s of waiting for more GUILD_CREATEs)
        so on_ready fires at once; the fake sends every guild straight after READY anyway.
        """
        if fast_ready:
            bot._connection.guild_ready_timeout = 0.05
        task = asyncio.create_task(bot.start(self.token), name="fake-discord-bot")
        waiter = asyncio.ensure_future(bot.wait_until_ready())
        try:
            done, _ = await asyncio.wait({task, waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()  # raises what start() raised
                raise AssertionError("bot.start() returned before the bot was ready")
            if waiter not in done:
                raise AssertionError(f"bot was not ready within {timeout}s; requests: {self.requests[-5:]}")
            yield bot
        finally:
            waiter.cancel()
            await bot.close()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 5)

    # ---- waiting -----------------------------------------------------------------------------
    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, predicate: Callable[[], Any], *, timeout: float = 10.0, what: str = "condition") -> Any:
        """Wait until `predicate()` is truthy (re-checked on every change the fake sees); return its value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with self._changed:
            while not (result := predicate()):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
                # Woken by every change the fake sees; the short cap also catches predicates on the
                # bot's own state, which changes after the fake has answered.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._changed.wait(), min(remaining, 0.05))
            return result

    @property
    def connected(self) -> bool:
        """A client is on the gateway now and has been sent READY and every GUILD_CREATE."""
        return any(s.identified for s in self._sessions)

    async def wait_until_ready(self, timeout: float = 10.0) -> None:
        """Wait until a client is connected and has been sent READY and every GUILD_CREATE
        (after a bot restart this waits for the new connection)."""
        await self.wait_for(lambda: self.connected, timeout=timeout, what="a client to identify on the gateway")

    async def wait_until_disconnected(self, timeout: float = 10.0) -> None:
        await self.wait_for(lambda: not self._sessions, timeout=timeout, what="the gateway client to go away")

    async def wait_for_message(
        self,
        channel: Channel | None = None,
        predicate: Callable[[Message], Any] | None = None,
        *,
        timeout: float = 10.0,
        include_ephemeral: bool = False,
    ) -> Message:
        """The newest live message in `channel` (default: the default channel) matching `predicate`."""
        channel = channel or self.channel

        def find():
            for m in reversed(self.channel_messages(channel, include_ephemeral=include_ephemeral)):
                if predicate is None or predicate(m):
                    return m
            return None

        return await self.wait_for(find, timeout=timeout, what=f"a message in #{channel.name or channel.id}")

    async def wait_for_request(
        self, method: str, route: str, predicate: Callable[[RequestRecord], Any] | None = None, *, timeout: float = 10.0
    ) -> RequestRecord:
        def find():
            return next(
                (
                    r
                    for r in self.requests
                    if r.method == method and r.route == route and r.status and (predicate is None or predicate(r))
                ),
                None,
            )

        return await self.wait_for(find, timeout=timeout, what=f"request {method} {route}")

    def channel_messages(self, channel: Channel | None = None, *, include_ephemeral: bool = False) -> list[Message]:
        channel = channel or self.channel
        return [
            m
            for m in self.messages.values()
            if m.channel is channel and not m.deleted and (include_ephemeral or not m.ephemeral)
        ]

    def requests_to(self, method: str, route: str) -> list[RequestRecord]:
        return [r for r in self.requests if r.method == method and r.route == route]

    # ---- violations --------------------------------------------------------------------------
    def violate(self, kind: str, message: str, request: RequestRecord | None = None) -> None:
        v = Violation(kind, message, request)
        if request is not None:
            request.violations.append(f"{kind}: {message}")
        for patterns, caught in reversed(self._expected):
            if any(p.search(str(v)) for p in patterns):
                caught.append(v)
                return
        log.warning("fake discord violation: %s", v)
        self.violations.append(v)

    @contextlib.contextmanager
    def expect_violations(self, *patterns: str):
        """Within the block, violations matching any regex in `patterns` are expected: they are collected
        into the yielded list instead of failing the test, and the block fails if none occurred."""
        compiled = [re.compile(p) for p in (patterns or (".",))]
        caught: list[Violation] = []
        entry = (compiled, caught)
        self._expected.append(entry)
        try:
            yield caught
        finally:
            self._expected.remove(entry)
        if not caught:
            raise AssertionError(f"expected a violation matching {patterns!r}, but none happened")

    def report(self) -> str:
        lines = [f"fake Discord saw {len(self.violations)} violation(s):"]
        lines += [f"  {i + 1}. {v}" for i, v in enumerate(self.violations)]
        if self.unknown_routes:
            lines.append("  routes the fake does not implement: " + ", ".join(sorted(set(self.unknown_routes))))
        return "\n".join(lines)

    def check_interactions_acknowledged(self) -> None:
        for ix in self.interactions.values():
            if ix.callback is None and not ix.expired and not ix.reported:
                ix.reported = True
                self.violate("ack", f"{ix!r} was never acknowledged (the user sees 'The application did not respond')")

    # ---- rate limits -------------------------------------------------------------------------
    def rate_limit(
        self,
        limit: int,
        per: float = 1.0,
        *,
        method: str | None = None,
        route: str | None = None,
        announce: bool = True,
    ) -> None:
        """Answer 429 when more than `limit` requests hit one bucket (route + major parameter) within
        `per` seconds. `route` is a spec template such as /webhooks/{webhook_id}/{webhook_token}/messages/@original.

        With `announce` the X-RateLimit-* headers tell the truth, so discord.py waits by itself and rarely
        sees a 429 (check request timing with `requests_to`); without, the limit is only discovered by
        hitting it, like Discord's unannounced shared limits."""
        self._rate_rules.append(_RateRule(limit, per, method, route, announce))

    def fail_requests(
        self,
        status: int = 502,
        *,
        method: str | None = None,
        route: str | None = None,
        count: int | None = None,
        seconds: float | None = None,
        after_applying: bool = False,
        code: int = 0,
    ) -> Outage:
        """Answer matching requests with `status` (5xx, or 429 with a short Retry-After): the next `count`
        of them, or all for `seconds`, or until `outage.end()`. With `after_applying` the request takes
        effect first and only the answer is lost, as when Discord's edge times out on a request it applied.
        `code` is Discord's JSON error code (e.g. 404 with 10062: an interaction answered too late)."""
        if count is None and seconds is None and not after_applying:
            seconds = float("inf")
        outage = Outage(status, method, route, count, seconds, after_applying, code)
        self._outages.append(outage)
        return outage

    def _outage_for(self, rec: RequestRecord) -> Outage | None:
        return next((o for o in self._outages if o.take(rec)), None)

    def _outage_response(self, rec: RequestRecord, outage: Outage, headers: dict[str, str]) -> web.Response:
        if outage.status == 429:
            headers = {
                **headers,
                "Retry-After": "1",
                "Via": "1.1 google",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Scope": "shared",
                "X-RateLimit-Reset-After": "0.100",
            }
            return self._finish(
                rec, 429, {"message": "You are being rate limited.", "retry_after": 0.1, "global": False}, headers
            )
        reason = HTTPStatus(outage.status).phrase
        return self._finish(rec, outage.status, {"message": f"{outage.status}: {reason}", "code": outage.code}, headers)

    @property
    def rate_limited(self) -> list[RequestRecord]:
        return [r for r in self.requests if r.status == 429]

    def _check_rate(self, rec: RequestRecord, params: dict[str, str]) -> tuple[dict[str, str], float | None]:
        major = (
            params.get("channel_id")
            or params.get("webhook_token")
            or params.get("interaction_token")
            or params.get("guild_id")
            or ""
        )
        bucket = f"{abs(hash((rec.method, rec.route))) % 10**12:x}"
        headers = {
            "X-RateLimit-Limit": "50",
            "X-RateLimit-Remaining": "49",
            "X-RateLimit-Reset-After": "1.000",
            "X-RateLimit-Reset": f"{time.time() + 1:.3f}",
            "X-RateLimit-Bucket": bucket,
        }
        now = time.monotonic()
        for rule in self._rate_rules:
            if not rule.applies(rec.method, rec.route):
                continue
            hits = rule.hits[(rec.method, rec.route, major)]
            while hits and hits[0] <= now - rule.per:
                hits.popleft()
            reset_after = (hits[0] + rule.per - now) if hits else rule.per
            headers.update(
                {
                    "X-RateLimit-Limit": str(rule.limit),
                    "X-RateLimit-Reset-After": f"{reset_after:.3f}",
                    "X-RateLimit-Reset": f"{time.time() + reset_after:.3f}",
                }
            )
            if len(hits) >= rule.limit:
                headers["X-RateLimit-Remaining"] = "0"
                return headers, reset_after
            hits.append(now)
            if rule.announce:
                headers["X-RateLimit-Remaining"] = str(rule.limit - len(hits))
            else:
                headers.update({"X-RateLimit-Limit": "50", "X-RateLimit-Remaining": "49"})
        return headers, None

    # ---- HTTP plumbing -----------------------------------------------------------------------
    def _register_routes(self) -> None:
        r = self._route
        r("GET", "/users/@me", self._get_me)
        r("GET", "/users/{user_id}", self._get_user)
        r("POST", "/users/@me/channels", self._create_dm)
        r("GET", "/gateway", self._get_gateway)
        r("GET", "/gateway/bot", self._get_gateway_bot)
        r("GET", "/oauth2/applications/@me", self._get_application)
        r("GET", "/applications/@me", self._get_application)
        for prefix in ("/applications/{application_id}", "/applications/{application_id}/guilds/{guild_id}"):
            r("GET", prefix + "/commands", self._list_commands)
            r("PUT", prefix + "/commands", self._put_commands)
            r("POST", prefix + "/commands", self._post_command)
            r("GET", prefix + "/commands/{command_id}", self._get_command)
            r("PATCH", prefix + "/commands/{command_id}", self._patch_command)
            r("DELETE", prefix + "/commands/{command_id}", self._delete_command)
        r("POST", "/interactions/{interaction_id}/{interaction_token}/callback", self._callback)
        wh = "/webhooks/{webhook_id}/{webhook_token}"
        r("POST", wh, self._followup)
        for m in ("GET", "PATCH", "DELETE"):
            r(m, wh + "/messages/@original", self._webhook_message)
            r(m, wh + "/messages/{message_id}", self._webhook_message)
        r("GET", "/channels/{channel_id}", self._get_channel)
        r("GET", "/channels/{channel_id}/messages", self._list_messages)
        r("POST", "/channels/{channel_id}/messages", self._create_message)
        r("POST", "/channels/{channel_id}/typing", self._typing)
        for m in ("GET", "PATCH", "DELETE"):
            r(m, "/channels/{channel_id}/messages/{message_id}", self._channel_message)
        r("PUT", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me", self._react)
        r("DELETE", "/channels/{channel_id}/messages/{message_id}/reactions/{emoji_name}/@me", self._react)
        r("GET", "/guilds/{guild_id}", self._get_guild)
        r("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member)
        r("GET", "/guilds/{guild_id}/channels", self._get_guild_channels)
        r("GET", "/guilds/{guild_id}/roles", self._get_guild_roles)

    def _route(self, method: str, template: str, handler: Callable[..., Awaitable[Any]]) -> None:
        self._routes.append((compile_template(method, template), handler))

    async def _read_body(self, request: web.Request) -> tuple[Any, list[Upload], str | None]:
        ctype = request.content_type
        if not request.can_read_body:
            return None, [], None
        if ctype == "multipart/form-data":
            body, files = None, []
            reader = await request.multipart()
            async for part in reader:
                name = part.name or ""
                data = await part.read(decode=False)
                if name == "payload_json":
                    body = json.loads(data)
                elif m := re.fullmatch(r"files\[(\d+)\]", name):
                    files.append(
                        Upload(int(m.group(1)), part.filename or name, part.headers.get("Content-Type"), bytes(data))
                    )
                else:
                    return body, files, f"unexpected multipart field {name!r}"
            return body, files, None
        raw = await request.read()
        if not raw:
            return None, [], None
        try:
            return json.loads(raw), [], None
        except ValueError:
            return None, [], f"body is not JSON (Content-Type {ctype})"

    async def _stray(self, request: web.Request) -> web.Response:
        self.violate("unknown-route", f"{request.method} {request.path} is outside /api/v10")
        return web.Response(
            body=b'{"message": "404: Not Found", "code": 0}', status=404, headers={"Content-Type": "application/json"}
        )

    async def _rest(self, request: web.Request) -> web.StreamResponse:
        path = "/" + request.match_info["tail"]
        method = request.method
        body, files, body_problem = await self._read_body(request)
        spec_match = self.spec.match(method, path)
        rec = RequestRecord(
            method,
            path,
            spec_match[0].template if spec_match else "?",
            dict(request.query),
            body,
            files,
            time.monotonic(),
        )
        self.requests.append(rec)
        if body_problem:
            self.violate("body", body_problem, rec)

        found = match_route([r for r, _ in self._routes], method, path)
        if found is None:
            self.unknown_routes.append(f"{method} {rec.route if spec_match else path}")
            what = "a Discord route the fake does not implement" if spec_match else "not a Discord route"
            self.violate("unknown-route", f"{method} {path} is {what}", rec)
            return self._finish(rec, 404, {"message": "404: Not Found", "code": 0}, {})
        route, params = found
        handler = dict((id(r), h) for r, h in self._routes)[id(route)]
        if rec.route == "?":
            rec.route = route.template

        is_webhook = route.template.startswith(("/webhooks/", "/interactions/"))
        auth = request.headers.get("Authorization")
        if not is_webhook and auth != f"Bot {self.token}":
            self.violate("auth", f"Authorization header is {auth!r}, not 'Bot <token>'", rec)
            return self._finish(rec, 401, {"message": "401: Unauthorized", "code": 0}, {})

        if spec_match and (body is not None or files):
            for problem in self.spec.validate(method, spec_match[0].template, body):
                self.violate("spec", problem, rec)

        headers, retry_after = self._check_rate(rec, params)
        if retry_after is not None:
            headers.update(
                {"Retry-After": f"{max(1, round(retry_after))}", "Via": "1.1 google", "X-RateLimit-Scope": "user"}
            )
            return self._finish(
                rec,
                429,
                {"message": "You are being rate limited.", "retry_after": retry_after, "global": False},
                headers,
            )
        outage = self._outage_for(rec)
        if outage is not None and not outage.after_applying:
            response = self._outage_response(rec, outage, headers)
            await self._notify()
            return response
        try:
            result = await handler(rec, params, body or {}, files)
        except DiscordError as e:
            status, payload = e.status, {"message": e.message, "code": e.code}
        else:
            status, payload = (204, None) if result is None else (200, result)
        if outage is not None:  # applied, but the answer is lost
            response = self._outage_response(rec, outage, headers)
        else:
            response = self._finish(rec, status, payload, headers)
        await self._notify()
        return response

    def _finish(self, rec: RequestRecord, status: int, payload: Any, headers: dict[str, str]) -> web.Response:
        rec.status, rec.response = status, payload
        if payload is None:
            return web.Response(status=status, headers=headers)
        # discord.py's json_or_text() wants exactly "application/json"; aiohttp's json_response adds a charset.
        return web.Response(
            body=json.dumps(payload).encode(), status=status, headers={**headers, "Content-Type": "application/json"}
        )

    async def _cdn(self, request: web.Request) -> web.Response:
        att_id = int(request.match_info["id"])
        for a in [*(a for m in self.messages.values() for a in m.attachments), *self._uploads.values()]:
            if a.id == att_id:
                self.cdn_downloads.append(a)
                return web.Response(body=a.data, content_type=a.content_type or "application/octet-stream")
        return web.Response(status=404)

    # ---- gateway -----------------------------------------------------------------------------
    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        session = _Session(ws)
        self._sessions.append(session)
        try:
            await ws.send_str(
                json.dumps({"op": 10, "d": {"heartbeat_interval": 41250, "_trace": ["fake"]}, "s": None, "t": None})
            )
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                data = json.loads(msg.data)
                self.gateway_events.append(data)
                op = data.get("op")
                if op == 1:
                    await ws.send_str(json.dumps({"op": 11, "d": None, "s": None, "t": None}))
                elif op == 2:
                    if data["d"].get("token") != self.token:
                        self.violate("auth", "IDENTIFY with the wrong token")
                        await ws.close(code=4004, message=b"Authentication failed.")
                        break
                    await self._identify(session, data["d"])
                elif op == 6:
                    self.resumes += 1
                    session.identified = True
                    session.seq = data["d"].get("seq") or session.seq
                    await self._notify()
                    await session.dispatch("RESUMED", {"_trace": ["fake"]})
                elif op == 8:
                    guild = self.guilds.get(int(data["d"]["guild_id"]))
                    if guild is not None:
                        await session.dispatch(
                            "GUILD_MEMBERS_CHUNK",
                            {
                                "guild_id": str(guild.id),
                                "members": [m.to_payload() for m in guild.members.values()],
                                "chunk_index": 0,
                                "chunk_count": 1,
                                "nonce": data["d"].get("nonce"),
                            },
                        )
        finally:
            self._sessions.remove(session)
            await self._notify()
        return ws

    async def _identify(self, session: _Session, d: dict[str, Any]) -> None:
        ready = {
            "v": 10,
            "user": {**self.bot_user.to_payload(), "verified": True, "mfa_enabled": False, "email": None},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds.values()],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": self.application_flags},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "user_settings": {},
            "session_type": "normal",
            "auth": {},
            "_trace": ["fake"],
        }
        if "shard" in d:
            ready["shard"] = d["shard"]
        session.identified = True
        await session.dispatch("READY", ready)
        for g in self.guilds.values():
            await session.dispatch("GUILD_CREATE", g.to_payload())
        self.identifies += 1
        await self._notify()

    async def drop_gateway(self, code: int = 4000) -> None:
        """Close every gateway connection as Discord does on a hiccup; discord.py reconnects and RESUMEs
        (codes 4004 and 4010-4014 are fatal to discord.py instead)."""
        for s in list(self._sessions):
            s.identified = False
            await s.ws.close(code=code, message=b"fake: connection dropped")
        await self._notify()

    async def announce_guild(self, guild: Guild | None = None) -> None:
        """Re-send GUILD_CREATE, so a connected bot sees channels/members/roles added after it started."""
        await self.dispatch("GUILD_CREATE", (guild or self.guild).to_payload())

    async def dispatch(self, event: str, data: dict[str, Any]) -> None:
        """Send a gateway event to every identified client."""
        sessions = [s for s in self._sessions if s.identified]
        for s in sessions:
            await s.dispatch(event, data)

    # ---- simple REST handlers ----------------------------------------------------------------
    async def _get_me(self, rec, params, body, files):
        return {
            **self.bot_user.to_payload(),
            "verified": True,
            "mfa_enabled": False,
            "email": None,
            "bio": "",
            "banner": None,
            "accent_color": None,
            "locale": "en-US",
        }

    async def _get_user(self, rec, params, body, files):
        user = self.users.get(int(params["user_id"]))
        if user is None:
            raise DiscordError(404, 10013, "Unknown User")
        return user.to_payload()

    async def _create_dm(self, rec, params, body, files):
        user = self.users.get(int(body.get("recipient_id", 0)))
        if user is None:
            raise DiscordError(400, 50035, "Invalid Form Body")
        return self.dm(user).to_payload()

    async def _get_gateway(self, rec, params, body, files):
        return {"url": self.gateway_url}

    async def _get_gateway_bot(self, rec, params, body, files):
        return {
            "url": self.gateway_url,
            "shards": 1,
            "session_start_limit": {"total": 1000, "remaining": 999, "reset_after": 86400000, "max_concurrency": 1},
        }

    async def _get_application(self, rec, params, body, files):
        return {
            "id": str(self.application_id),
            "name": self.bot_user.username,
            "icon": None,
            "description": "dreamgrid under test",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.owner.to_payload(),
            "team": None,
            "verify_key": "0" * 64,
            "flags": self.application_flags,
            "tags": [],
            "rpc_origins": [],
            "interactions_endpoint_url": None,
            "role_connections_verification_url": None,
            "redirect_uris": [],
            "approximate_guild_count": len(self.guilds),
            "is_monetized": False,
            "bot": self.bot_user.to_payload(),
            "install_params": {"scopes": ["bot", "applications.commands"], "permissions": "0"},
            "integration_types_config": {"0": {}},
        }

    async def _get_channel(self, rec, params, body, files):
        return self._channel(params).to_payload()

    async def _typing(self, rec, params, body, files):
        self._channel(params)
        return None

    async def _get_guild(self, rec, params, body, files):
        g = self._guild(params)
        d = g.to_payload()
        for k in (
            "members",
            "channels",
            "voice_states",
            "presences",
            "threads",
            "joined_at",
            "large",
            "member_count",
            "lazy",
            "unavailable",
            "stage_instances",
            "guild_scheduled_events",
            "soundboard_sounds",
        ):
            d.pop(k, None)
        return d

    async def _get_guild_channels(self, rec, params, body, files):
        return [c.to_payload() for c in self._guild(params).channels]

    async def _get_guild_roles(self, rec, params, body, files):
        return [r.to_payload() for r in self._guild(params).roles]

    async def _get_member(self, rec, params, body, files):
        g = self._guild(params)
        m = g.members.get(int(params["user_id"]))
        if m is None:
            raise DiscordError(404, 10007, "Unknown Member")
        return m.to_payload()

    def _guild(self, params) -> Guild:
        g = self.guilds.get(int(params["guild_id"]))
        if g is None:
            raise DiscordError(404, 10004, "Unknown Guild")
        return g

    def _channel(self, params) -> Channel:
        try:
            return self.channels[int(params["channel_id"])]
        except (KeyError, ValueError):
            raise DiscordError(404, 10003, "Unknown Channel") from None

    # ---- application commands ----------------------------------------------------------------
    def _command_store(self, params) -> dict[int, dict[str, Any]]:
        if int(params["application_id"]) != self.application_id:
            raise DiscordError(403, 50001, "Missing Access")
        if "guild_id" in params:
            return self.guild_commands[self._guild(params).id]
        return self.commands

    def _stored_command(self, params, body: dict[str, Any], existing: dict[str, Any] | None) -> dict[str, Any]:
        cmd = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            "name_localizations": None,
            "description_localizations": None,
            **body,
            "id": existing["id"] if existing else str(snowflake()),
            "application_id": str(self.application_id),
            "version": str(snowflake()),
        }
        if "guild_id" in params:
            cmd["guild_id"] = params["guild_id"]
        return cmd

    async def _list_commands(self, rec, params, body, files):
        return list(self._command_store(params).values())

    async def _put_commands(self, rec, params, body, files):
        store = self._command_store(params)
        old = {(c.get("type", 1), c["name"]): c for c in store.values()}
        new = [self._stored_command(params, c, old.get((c.get("type", 1), c["name"]))) for c in rec.json or []]
        store.clear()
        store.update({int(c["id"]): c for c in new})
        return new

    async def _post_command(self, rec, params, body, files):
        store = self._command_store(params)
        old = next(
            (c for c in store.values() if c["name"] == body.get("name") and c.get("type", 1) == body.get("type", 1)),
            None,
        )
        cmd = self._stored_command(params, body, old)
        store[int(cmd["id"])] = cmd
        return cmd

    def _find_command(self, params) -> dict[str, Any]:
        store = self._command_store(params)
        cmd = store.get(int(params["command_id"]))
        if cmd is None:
            raise DiscordError(404, 10063, "Unknown application command")
        return cmd

    async def _get_command(self, rec, params, body, files):
        return self._find_command(params)

    async def _patch_command(self, rec, params, body, files):
        cmd = self._find_command(params)
        cmd.update(body)
        return cmd

    async def _delete_command(self, rec, params, body, files):
        cmd = self._find_command(params)
        del self._command_store(params)[int(cmd["id"])]
        return None

    def find_command(self, name: str, *, guild: Guild | None = None, type: int = 1) -> dict[str, Any] | None:
        """The synced definition of a top-level command, guild commands first."""
        stores = ([self.guild_commands.get(guild.id, {})] if guild else []) + [self.commands]
        for store in stores:
            for c in store.values():
                if c["name"] == name and c.get("type", 1) == type:
                    return c
        return None

    # ---- messages ----------------------------------------------------------------------------
    def _check_message_rules(self, rec: RequestRecord, body: dict[str, Any], files: list[Upload]) -> None:
        """Record what breaks Discord's limits, and refuse it with 400 as Discord does (nothing is applied)."""
        problems = rules.check_message(body, sizes=[len(f.data) for f in files], size_limit=self.attachment_size_limit)
        if problems and not rec.refused:
            rec.refused = True
            for problem in problems:
                self.violate("rule", problem, rec)
        if problems:
            raise DiscordError(400, 50035, "Invalid Form Body: " + "; ".join(problems))

    def _attach(
        self, rec: RequestRecord, msg: Message, body: dict[str, Any], files: list[Upload], *, editing: bool
    ) -> None:
        uploads = {f.index: f for f in files}
        used: set[int] = set()
        if "attachments" in body and body["attachments"] is not None:
            existing = {a.id: a for a in msg.attachments}
            result: list[Attachment] = []
            for entry in body["attachments"]:
                aid = int(entry["id"])
                if aid in existing:
                    result.append(existing[aid])
                elif aid in uploads:
                    used.add(aid)
                    result.append(self._store_upload(msg, uploads[aid], entry))
                else:
                    self.violate(
                        "rule",
                        f"attachments entry id {aid} is neither an existing attachment nor an uploaded files[n]",
                        rec,
                    )
            result += [self._store_upload(msg, f, {}) for i, f in uploads.items() if i not in used]
            msg.attachments = result
        elif files:
            new = [self._store_upload(msg, f, {}) for f in files]
            msg.attachments = (msg.attachments + new) if editing else new

    def _store_upload(self, msg: Message, up: Upload, entry: dict[str, Any]) -> Attachment:
        aid = snowflake()
        filename = entry.get("filename") or up.filename
        return Attachment(
            aid,
            filename,
            up.data,
            f"{self.base_url}/attachments/{msg.channel.id}/{aid}/{filename}",
            up.content_type,
            entry.get("description"),
            ephemeral=msg.ephemeral,
        )

    def _new_message(
        self,
        rec: RequestRecord,
        channel: Channel,
        body: dict[str, Any],
        files: list[Upload],
        *,
        flags: int = 0,
        interaction: Interaction | None = None,
        mtype: int = 0,
    ) -> Message:
        msg = Message(snowflake(), channel, self.bot_user, flags=flags, type=mtype)
        self._apply(rec, msg, body, files, editing=False)
        if interaction is not None:
            msg.webhook_id = msg.application_id = self.application_id
            msg.interaction_metadata = self._interaction_metadata(interaction)
        self.messages[msg.id] = msg
        return msg

    def _apply(
        self, rec: RequestRecord, msg: Message, body: dict[str, Any], files: list[Upload], *, editing: bool
    ) -> None:
        self._check_message_rules(rec, body, files)
        if editing:
            msg.history.append(msg.snapshot())
            msg.edited_timestamp = iso_now()
        if "content" in body:
            msg.content = body["content"] or ""
        if "embeds" in body:
            msg.embeds = body["embeds"] or []
        if "components" in body:
            msg.components = body["components"] or []
        if not editing:
            msg.flags |= (body.get("flags") or 0) & ~rules.LOADING
        elif body.get("flags") is not None:
            keep = msg.flags & (rules.EPHEMERAL | rules.IS_COMPONENTS_V2)
            msg.flags = keep | (body["flags"] & ~(rules.EPHEMERAL | rules.LOADING))
        if editing:
            msg.flags &= ~rules.LOADING
        self._attach(rec, msg, body, files, editing=editing)

    def _interaction_metadata(self, ix: Interaction) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": str(ix.id),
            "type": ix.type,
            "user": ix.user.to_payload(),
            "authorizing_integration_owners": ix.payload["authorizing_integration_owners"],
        }
        if ix.type == 2:
            d["name"] = ix.payload["data"]["name"]
            d["command_type"] = ix.payload["data"].get("type", 1)
        if ix.message is not None:
            d["interacted_message_id"] = str(ix.message.id)
        return d

    async def _announce(self, event: str, msg: Message) -> None:
        if msg.ephemeral:
            return
        if event == "MESSAGE_DELETE":
            data: dict[str, Any] = {"id": str(msg.id), "channel_id": str(msg.channel.id)}
            if msg.channel.guild:
                data["guild_id"] = str(msg.channel.guild.id)
        else:
            data = msg.to_payload()
        await self.dispatch(event, data)

    def _check_bot_can_post(self, rec: RequestRecord, channel: Channel, body: dict[str, Any], files: list) -> None:
        if channel.guild is None:
            return
        perms = channel.guild.members[self.bot_user.id].permissions_in(channel)
        need = P.VIEW_CHANNEL | P.SEND_MESSAGES
        if files:
            need |= P.ATTACH_FILES
        if body.get("embeds"):
            need |= P.EMBED_LINKS
        if perms & need != need:
            raise DiscordError(403, 50013, "Missing Permissions")

    async def _create_message(self, rec, params, body, files):
        channel = self._channel(params)
        nonce = body.get("nonce")
        if body.get("enforce_nonce") and nonce is not None:
            # Discord: a second message with the same nonce from the same author returns the first.
            earlier = self._nonces.get((channel.id, str(nonce)))
            if earlier is not None and not earlier.deleted:
                return earlier.to_payload()
        self._check_bot_can_post(rec, channel, body, files)
        if (body.get("flags") or 0) & rules.EPHEMERAL:
            self.violate("rule", "channel messages cannot be ephemeral (flag 64 is only for interactions)", rec)
        msg = self._new_message(rec, channel, body, files)
        if body.get("enforce_nonce") and nonce is not None:
            self._nonces[(channel.id, str(nonce))] = msg
        await self._announce("MESSAGE_CREATE", msg)
        return msg.to_payload()

    async def _list_messages(self, rec, params, body, files):
        channel = self._channel(params)
        limit = int(rec.query.get("limit", 50))
        msgs = self.channel_messages(channel)
        if "before" in rec.query:
            msgs = [m for m in msgs if m.id < int(rec.query["before"])]
        if "after" in rec.query:
            msgs = [m for m in msgs if m.id > int(rec.query["after"])][:limit]
        return [m.to_payload() for m in reversed(msgs)][:limit]

    def _message_in(self, channel: Channel, message_id: str) -> Message:
        msg = self.messages.get(int(message_id))
        if msg is None or msg.deleted or msg.channel is not channel or msg.ephemeral:
            raise _unknown_message()
        return msg

    async def _channel_message(self, rec, params, body, files):
        channel = self._channel(params)
        msg = self._message_in(channel, params["message_id"])
        if rec.method == "GET":
            return msg.to_payload()
        if msg.author is not self.bot_user and rec.method == "PATCH":
            raise DiscordError(403, 50005, "Cannot edit a message authored by another user")
        if rec.method == "DELETE":
            msg.deleted = True
            await self._announce("MESSAGE_DELETE", msg)
            return None
        self._apply(rec, msg, body, files, editing=True)
        await self._announce("MESSAGE_UPDATE", msg)
        return msg.to_payload()

    async def _react(self, rec, params, body, files):
        channel = self._channel(params)
        msg = self._message_in(channel, params["message_id"])
        from urllib.parse import unquote

        emoji = unquote(params["emoji_name"])
        users = msg.reactions.setdefault(emoji, set())
        if rec.method == "PUT":
            users.add(self.bot_user.id)
        else:
            users.discard(self.bot_user.id)
            if not users:
                del msg.reactions[emoji]
        return None

    # ---- interactions: callback and webhooks -------------------------------------------------
    _ALLOWED_CALLBACKS = {2: {4, 5, 9}, 3: {4, 5, 6, 7, 9}, 4: {8}, 5: {4, 5, 6, 7}}

    async def _callback(self, rec, params, body, files):
        ix = self.interactions.get(int(params["interaction_id"]))
        if ix is None or ix.token != params["interaction_token"] or ix.expired:
            raise DiscordError(404, 10062, "Unknown interaction")
        elapsed = time.monotonic() - ix.created
        if ix.callbacks:
            self.violate("ack", f"{ix!r} was responded to twice (second callback type {body.get('type')})", rec)
            raise DiscordError(400, 40060, "Interaction has already been acknowledged.")
        if elapsed > ACK_DEADLINE:
            self.violate("ack", f"{ix!r} acknowledged after {elapsed:.2f}s (Discord allows {ACK_DEADLINE:.0f}s)", rec)
            raise DiscordError(404, 10062, "Unknown interaction")
        ctype = body.get("type")
        data = body.get("data") or {}
        if ctype not in self._ALLOWED_CALLBACKS.get(ix.type, set()) or (
            ix.type == 5 and ctype in (6, 7) and ix.message is None
        ):
            self.violate("rule", f"callback type {ctype} is not valid for interaction type {ix.type}", rec)
            raise DiscordError(400, 50035, "Invalid Form Body")
        if ctype in (4, 7):
            self._check_message_rules(rec, data, files)  # a 400 leaves the interaction unacknowledged
        ix.callbacks.append(Callback(ctype, data, elapsed))

        message: Message | None = None
        if ctype in (4, 5):
            flags = (data.get("flags") or 0) & rules.EPHEMERAL
            if ctype == 4:
                message = self._new_message(
                    rec, ix.channel, data, files, flags=flags, interaction=ix, mtype=20 if ix.type == 2 else 0
                )
            else:
                message = self._new_message(
                    rec,
                    ix.channel,
                    {},
                    [],
                    flags=flags | rules.LOADING,
                    interaction=ix,
                    mtype=20 if ix.type == 2 else 0,
                )
            ix.original = message
            await self._announce("MESSAGE_CREATE", message)
        elif ctype in (6, 7):
            ix.original = message = ix.message
            if ctype == 7 and message is not None:
                self._apply(rec, message, data, files, editing=True)
                await self._announce("MESSAGE_UPDATE", message)
        elif ctype == 8:
            for problem in rules.check_autocomplete(data):
                self.violate("rule", problem, rec)
        elif ctype == 9:
            for problem in rules.check_modal(data):
                self.violate("rule", problem, rec)

        if rec.query.get("with_response") not in ("1", "true", "True"):
            return None
        interaction: dict[str, Any] = {"id": str(ix.id), "type": ix.type}
        resource: dict[str, Any] = {"type": ctype}
        if message is not None and ctype in (4, 5, 7):
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=ctype == 5,
                response_message_ephemeral=message.ephemeral,
            )
            resource["message"] = message.to_payload()
        return {"interaction": interaction, "resource": resource}

    def _webhook_interaction(self, params) -> Interaction:
        if int(params["webhook_id"]) != self.application_id:
            raise DiscordError(404, 10015, "Unknown Webhook")
        ix = self._by_token.get(params["webhook_token"])
        if ix is None or ix.expired:
            raise _invalid_token()
        return ix

    async def _followup(self, rec, params, body, files):
        ix = self._webhook_interaction(params)
        if ix.callback is None:
            self.violate("ack", f"follow-up sent before {ix!r} was acknowledged", rec)
            raise DiscordError(404, 10015, "Unknown Webhook")
        orig = ix.original
        if orig is not None and orig.loading and not orig.deleted:
            # Discord: the first follow-up after a deferred "thinking" response replaces the placeholder
            # (once the placeholder is deleted, follow-ups are new messages with their own flags).
            self._apply(rec, orig, body, files, editing=True)
            await self._announce("MESSAGE_UPDATE", orig)
            msg = orig
        else:
            flags = (body.get("flags") or 0) & rules.EPHEMERAL
            msg = self._new_message(rec, ix.channel, body, files, flags=flags, interaction=ix)
            ix.followups.append(msg)
            await self._announce("MESSAGE_CREATE", msg)
        if rec.query.get("wait") in ("false", "False", "0"):
            return None
        return msg.to_payload()

    async def _webhook_message(self, rec, params, body, files):
        ix = self._webhook_interaction(params)
        mid = params.get("message_id")
        if mid is None:  # @original
            if ix.callback is None:
                self.violate("ack", f"original response of {ix!r} used before acknowledging", rec)
                raise _unknown_message()
            msg = ix.original
            if msg is None:
                raise _unknown_message()
        else:
            msg = next((m for m in [ix.original, *ix.followups] if m is not None and m.id == int(mid)), None)
            if msg is None:
                raise _unknown_message()
        if msg.deleted:
            raise _unknown_message()
        if rec.method == "GET":
            return msg.to_payload()
        if rec.method == "DELETE":
            msg.deleted = True
            await self._announce("MESSAGE_DELETE", msg)
            return None
        self._apply(rec, msg, body, files, editing=True)
        await self._announce("MESSAGE_UPDATE", msg)
        return msg.to_payload()

    def expire_tokens(self) -> None:
        """Expire every interaction token issued so far (Discord does so after 15 minutes)."""
        for ix in self.interactions.values():
            ix.expire()
