"""Prometheus metrics and a health check, for operators who would rather not read the logs.

The metrics live in the bot's own registry (never the process-wide default) and are always
counted; `MetricsServer` serves them, with `/healthz`, only when METRICS_PORT is set. Labels are
kept to small fixed sets (kind, outcome, state, reason, status, installed model): never a member,
a server or a prompt.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
from collections.abc import Sequence
from typing import TYPE_CHECKING

import aiohttp
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from bot.rows import Job, parse_time

if TYPE_CHECKING:
    from bot.client import DreamGrid

log = logging.getLogger(__name__)

WAIT_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200)
RENDER_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16, 32)


class Metrics:
    """Every metric the bot exports; see README's "Metrics" for what each is for."""

    def __init__(self, installed_models: Sequence[str]) -> None:
        self.installed_models = tuple(installed_models)
        self.registry = registry = CollectorRegistry()
        self.queue_jobs = Gauge("dreamgrid_queue_jobs", "Jobs waiting or running now", ["state"], registry=registry)
        self.jobs = Counter("dreamgrid_jobs", "Jobs that ended", ["kind", "outcome"], registry=registry)
        self.queue_wait = Histogram(
            "dreamgrid_queue_wait_seconds", "From queued to started", ["kind"], buckets=WAIT_BUCKETS, registry=registry
        )
        self.render_time = Histogram(
            "dreamgrid_render_seconds", "From started to finished", ["kind"], buckets=RENDER_BUCKETS, registry=registry
        )
        self.device_seconds = Counter(
            "dreamgrid_device_seconds", "Device (GPU) time spent on renders", ["kind"], registry=registry
        )
        self.batch_size = Histogram(
            "dreamgrid_batch_size",
            "Jobs that shared the pipeline call of each finished job",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self.engine_errors = Counter(
            "dreamgrid_engine_errors", "Renders that did not finish, by reason", ["reason"], registry=registry
        )
        self.discord_http_errors = Counter(
            "dreamgrid_discord_http_errors", "Discord API responses with an error status", ["status"], registry=registry
        )
        self.discord_rate_limits = Counter(
            "dreamgrid_discord_rate_limits",
            "429 responses from Discord, by X-RateLimit-Scope",
            ["scope"],
            registry=registry,
        )
        self.model_loaded = Gauge("dreamgrid_model_loaded", "1 if the model is in memory", ["model"], registry=registry)
        self.gateway_connected = Gauge("dreamgrid_gateway_connected", "1 while connected to Discord", registry=registry)
        self.engine_alive = Gauge("dreamgrid_engine_alive", "1 while the engine takes renders", registry=registry)
        for state in ("queued", "running"):
            self.queue_jobs.labels(state)
        for model in self.installed_models:
            self.model_loaded.labels(model)

    # -- what the scheduler reports ------------------------------------------------------------

    def job_started(self, job: Job) -> None:
        started, created = parse_time(job.started_at), parse_time(job.created_at)
        if started is not None and created is not None:
            self.queue_wait.labels(job.kind).observe(max(0.0, (started - created).total_seconds()))

    def job_rendered(self, job: Job, render_s: float, device_s: float, batch_size: int) -> None:
        self.render_time.labels(job.kind).observe(render_s)
        self.device_seconds.labels(job.kind).inc(device_s)
        self.batch_size.observe(batch_size)

    def job_ended(self, job: Job, outcome: str) -> None:
        """outcome: done, failed, cancelled or timed_out."""
        self.jobs.labels(job.kind, outcome).inc()

    def engine_error(self, reason: str) -> None:
        """reason: failed (a RenderError), lost (its worker died; retried), timeout, crashed (a bug)."""
        self.engine_errors.labels(reason).inc()

    def loaded_models(self, loaded: Sequence[str]) -> None:
        for model in self.installed_models:
            self.model_loaded.labels(model).set(1 if model in loaded else 0)

    # -- what discord.py's HTTP client reports ------------------------------------------------

    def discord_trace(self) -> aiohttp.TraceConfig:
        """Counts Discord's error responses, for `discord.Client(http_trace=...)`."""
        trace = aiohttp.TraceConfig()

        async def on_request_end(session: object, context: object, params: aiohttp.TraceRequestEndParams) -> None:
            status = params.response.status
            if status == 429:
                scope = params.response.headers.get("X-RateLimit-Scope", "unknown")
                self.discord_rate_limits.labels(scope if scope in ("user", "global", "shared") else "unknown").inc()
            elif status >= 400:
                self.discord_http_errors.labels(str(status)).inc()

        trace.on_request_end.append(on_request_end)
        return trace


class MetricsServer:
    """`/metrics` (Prometheus text format) and `/healthz` on METRICS_HOST:METRICS_PORT.

    A plain asyncio server rather than a web framework, so its cost is bounded by construction:
    it accepts a connection only while it has one of MAX_CONNECTIONS slots free (the others wait
    in the kernel's listen queue, holding none of the bot's file descriptors), gives each one
    REQUEST_TIMEOUT_S to send a request of at most MAX_REQUEST_BYTES and read the answer, and
    then closes it. A thousand idle or half-sent requests cost the bot at most MAX_CONNECTIONS
    descriptors for at most REQUEST_TIMEOUT_S each: exposing the port (`METRICS_HOST`) hands
    out no way to stop the bot delivering.
    """

    MAX_CONNECTIONS = 16
    REQUEST_TIMEOUT_S = 5.0
    MAX_REQUEST_BYTES = 8192

    def __init__(self, bot: DreamGrid, host: str, port: int) -> None:
        self.bot = bot
        self.host = host
        self.port = port
        self._listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._slots = asyncio.Semaphore(self.MAX_CONNECTIONS)
        self._serving: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        family, kind, proto, _, address = (
            await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        )[0]
        listener = socket.socket(family, kind, proto)
        try:
            listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            listener.bind(address)
            listener.listen(self.MAX_CONNECTIONS)
            listener.setblocking(False)
        except OSError:
            listener.close()
            raise
        self._listener = listener
        self._accepting = asyncio.create_task(self._accept_loop(listener), name="metrics-accept")
        log.info("metrics on http://%s:%s/metrics, health on /healthz", self.host, self.port)

    async def stop(self) -> None:
        tasks = [t for t in (self._accepting, *self._serving) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._accepting = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    async def _accept_loop(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                connection, _ = await loop.sock_accept(listener)
            except OSError as exc:  # e.g. out of descriptors after all: back off, never spin
                self._slots.release()
                log.warning("metrics: could not accept a connection: %s", exc)
                await asyncio.sleep(1)
                continue
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._serve(connection))
            self._serving.add(task)
            task.add_done_callback(self._serving.discard)

    async def _serve(self, connection: socket.socket) -> None:
        writer: asyncio.StreamWriter | None = None
        try:
            async with asyncio.timeout(self.REQUEST_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(sock=connection, limit=self.MAX_REQUEST_BYTES)
                head = await reader.readuntil(b"\r\n\r\n")
                method, _, rest = head.partition(b" ")
                path = rest.partition(b" ")[0].partition(b"?")[0]
                status, content_type, body = await self._answer(method, path)
                writer.write(
                    f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                    + body
                )
                await writer.drain()
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass  # too slow, too long, or gone: dropped without an answer
        except Exception:
            log.exception("metrics: answering a request failed")
        finally:
            if writer is not None:
                writer.close()
            else:
                connection.close()
            self._slots.release()

    async def _answer(self, method: bytes, path: bytes) -> tuple[str, str, bytes]:
        if method != b"GET":
            return "405 Method Not Allowed", "text/plain", b"GET only\n"
        if path == b"/metrics":
            return "200 OK", CONTENT_TYPE_LATEST, await self._metrics()
        if path == b"/healthz":
            healthy, body = await self._healthz()
            return ("200 OK" if healthy else "503 Service Unavailable"), "application/json", body
        return "404 Not Found", "text/plain", b"/metrics or /healthz\n"

    async def _health(self) -> tuple[bool, bool]:
        metrics = self.bot.metrics
        gateway = self.bot.gateway_connected
        engine = await self.bot.engine.alive()
        metrics.gateway_connected.set(int(gateway))
        metrics.engine_alive.set(int(engine))
        return gateway, engine

    async def _metrics(self) -> bytes:
        metrics = self.bot.metrics
        for state, count in (await self.bot.store.jobs_by_status()).items():
            metrics.queue_jobs.labels(state).set(count)
        metrics.loaded_models(self.bot.engine.loaded_models)
        await self._health()
        return generate_latest(metrics.registry)

    async def _healthz(self) -> tuple[bool, bytes]:
        gateway, engine = await self._health()
        body = {"gateway": "connected" if gateway else "disconnected", "engine": "alive" if engine else "down"}
        return gateway and engine, json.dumps(body).encode()
