"""What an operator sees without reading logs: /metrics and /healthz after a few jobs."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bot.metrics import MetricsServer
from engine.fake import FakeEngine
from tests.e2e.botprocess import BotProcess, final_deliveries
from tests.e2e.test_images import picture
from tests.fakediscord import FakeDiscord
from tests.harness import result_of, running_bot


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_count_the_jobs_and_healthz_says_all_is_well(fake_discord: FakeDiscord, tmp_path: Path):
    fake = fake_discord
    port = _free_port()
    engine = FakeEngine(models=["fake"], step_delay_s=0.02)
    # A second edit within two seconds is refused with a 429, as Discord's unannounced limits do.
    fake.rate_limit(1, per=2.0, method="PATCH", announce=False)
    async with running_bot(fake, tmp_path, engine=engine, metrics_port=port, steps=20) as bot:
        for prompt in ("a red fox", "a blue fox"):
            await result_of(await fake.slash("imagine", prompt=prompt), timeout=30)
        failing = await fake.slash("imagine", prompt="__fail__ please")
        await failing.ack()
        photo = fake.upload("sunset.png", picture((96, 64), (220, 120, 30)))
        await (await fake.slash("describe", image=photo)).ack()
        await fake.wait_for(lambda: len(final_deliveries(fake)) == 4, timeout=30, what="four results")

        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                samples = _samples(await response.text())
            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                assert response.status == 200
                assert await response.json() == {"gateway": "connected", "engine": "alive"}

        def value(name: str, **labels: str) -> float:
            return samples[(name, tuple(sorted(labels.items())))]

        assert value("dreamgrid_jobs_total", kind="imagine", outcome="done") == 2
        assert value("dreamgrid_jobs_total", kind="imagine", outcome="failed") == 1
        assert value("dreamgrid_engine_errors_total", reason="failed") == 1
        assert value("dreamgrid_queue_jobs", state="queued") == value("dreamgrid_queue_jobs", state="running") == 0
        assert value("dreamgrid_queue_wait_seconds_count", kind="imagine") == 3
        assert value("dreamgrid_render_seconds_count", kind="imagine") == 2
        assert value("dreamgrid_jobs_total", kind="describe", outcome="done") == 1
        assert value("dreamgrid_render_seconds_count", kind="describe") == 1
        assert value("dreamgrid_device_seconds_total", kind="imagine") > 0
        assert value("dreamgrid_batch_size_count") == 3
        assert value("dreamgrid_model_loaded", model="fake") == 1
        assert value("dreamgrid_gateway_connected") == value("dreamgrid_engine_alive") == 1
        assert fake.rate_limited and value("dreamgrid_discord_rate_limits_total", scope="user") == len(
            fake.rate_limited
        )
        # Nothing says who asked for what.
        assert not any(label in ("user", "user_id", "guild", "prompt") for _, labels in samples for label, _ in labels)
        assert bot.metrics_server is not None

    # Stopped with the bot: nothing listens any more.
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


async def test_metrics_are_off_unless_a_port_is_set(fake_discord: FakeDiscord, tmp_path: Path):
    async with running_bot(fake_discord, tmp_path) as bot:
        assert bot.metrics_server is None


def _half_requests(port: int, count: int) -> list[socket.socket]:
    """`count` clients that connect and send half a request, then sit there (as an attacker's would)."""
    clients = []
    for _ in range(count):
        client = socket.socket()
        client.setblocking(False)
        client.connect_ex(("127.0.0.1", port))
        clients.append(client)
    return clients


async def test_idle_metrics_clients_cannot_take_the_bots_file_descriptors(fake_discord: FakeDiscord, tmp_path: Path):
    """Issue #29: 1,100 half-sent requests held all 1,024 descriptors and the bot stopped delivering."""
    fake = fake_discord
    port = _free_port()
    bot = BotProcess(fake, tmp_path, open_files_limit=256, metrics_port=port)
    await bot.start()
    clients: list[socket.socket] = []
    try:
        held = bot.open_files()
        clients = _half_requests(port, 400)  # more than the bot may open in all
        await asyncio.sleep(0.5)
        for client in clients:
            with contextlib.suppress(OSError):  # still in the listen queue: not connected yet
                client.send(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        await asyncio.sleep(0.5)
        assert bot.open_files() <= held + MetricsServer.MAX_CONNECTIONS + 4

        # Meanwhile a member's grid is drawn and delivered as usual.
        await result_of(await fake.slash("imagine", prompt="a fox, while someone floods the metrics port"), timeout=30)
        log = bot.log.read_text(errors="replace")
        assert "Too many open files" not in log

        # Once the idle ones are gone, a scrape is answered at once.
        for client in clients:
            client.close()
        clients = []
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 200
                assert "dreamgrid_jobs_total" in await response.text()
            async with http.post(f"http://127.0.0.1:{port}/metrics") as response:
                assert response.status == 405
        assert not bot.errors(), bot.errors()
    finally:
        for client in clients:
            client.close()
        await bot.stop()


async def test_a_slow_metrics_client_is_dropped_after_the_timeout(
    fake_discord: FakeDiscord, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(MetricsServer, "REQUEST_TIMEOUT_S", 0.5)
    fake = fake_discord
    port = _free_port()
    async with running_bot(fake, tmp_path, metrics_port=port):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /metr")  # and nothing more
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""  # closed, unanswered
        writer.close()
        too_long = b"GET /metrics HTTP/1.1\r\nX-Padding: " + b"x" * 2 * MetricsServer.MAX_REQUEST_BYTES + b"\r\n\r\n"
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(too_long)
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), timeout=5) == b""
        writer.close()
