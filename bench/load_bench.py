"""Load: bursts of 200 and 500 `/imagine` from 50 members at once: the real bot (subprocess), the fake Discord.

Checks what members would notice: every interaction acknowledged within Discord's 3 s (the bot
defers before any database work; goal p99 < 1 s at 500), every accepted job's result shown
exactly once, every refused one told why (ephemerally), and no job queued for an interaction
that was not acknowledged. Prints the acknowledgement latencies (p50/p99/max) per burst and the
time until the last result.

    .venv/bin/python -m bench.load_bench [--bursts 200,500] [--users 50] [--step-delay 0.002]

`--profile FILE` samples the bot with py-spy (`.venv/bin/pip install py-spy`; not a dependency) and
prints where its event loop spent the burst (BENCHMARKS.md, "Acknowledgement at 500 at once").
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.botprocess import BotProcess, final_deliveries, job_id_of, settled  # noqa: E402
from tests.fakediscord import FakeDiscord  # noqa: E402


def answered_at(fake: FakeDiscord) -> dict[int, float]:
    """Interaction id -> when the bot's first callback for it arrived, whatever the fake answered."""
    first: dict[int, float] = {}
    for rec in fake.requests_to("POST", "/interactions/{interaction_id}/{interaction_token}/callback"):
        first.setdefault(int(rec.path.split("/")[2]), rec.at)
    return first


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def _sample(bot: BotProcess, out: Path) -> asyncio.subprocess.Process:
    """py-spy sampling the bot process (collapsed stacks in `out`), for `--profile`."""
    assert bot.proc is not None
    spy = Path(sys.executable).with_name("py-spy")
    if not spy.exists():
        raise SystemExit("--profile needs py-spy: .venv/bin/pip install py-spy")
    sampler = await asyncio.create_subprocess_exec(
        str(spy), "record", "--pid", str(bot.proc.pid), "--format", "raw", "--rate", "250", "--output", str(out),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    await asyncio.sleep(1.0)  # attached
    return sampler


# Where the bot's event loop (its main thread) spends a burst (`--profile`): each sample goes to the
# first part, in this order, with a frame on its stack; the entry point (bot/__main__.py, bot/cli.py)
# is on every stack and does not count as ours.
_DISCORD_MODELS = ("discord/state.py", "discord/member.py", "discord/user.py", "discord/message.py", "discord/guild.py")
PROFILE_PARTS = (
    ("discord.py + aiohttp: sending interaction responses (HTTP)", ("discord/interactions.py", "discord/webhook")),
    ("discord.py + aiohttp: other HTTP requests", ("discord/http.py",)),
    ("our code (bot/: parse, admit, queue, show, deliver)", ("bot/cogs", "bot/jobs", "bot/policy", "bot/store",
                                                            "bot/scheduler", "bot/delivery", "bot/messages",
                                                            "bot/prompt", "bot/ui", "bot/spec", "bot/errors")),
    ("discord.py: app command dispatch", ("discord/app_commands",)),
    ("discord.py: parsing gateway events into models", _DISCORD_MODELS),
    ("discord.py: the gateway socket, zlib, JSON", ("discord/gateway.py", "discord/utils.py")),
    ("aiohttp: connections and sockets", ("aiohttp/", "aiohappyeyeballs/")),
    ("waiting (selector)", ("selectors.py",)),
)  # fmt: skip


def profile_summary(path: Path) -> list[tuple[str, float]]:
    """The share of the bot's main-thread samples in each of PROFILE_PARTS, from py-spy's collapsed stacks."""
    counts: dict[str, int] = {}
    total = 0
    for line in path.read_text(encoding="utf-8").splitlines():
        stack, _, number = line.rpartition(" ")
        if not number.isdigit() or not stack.startswith("_run_module_as_main"):
            continue  # another thread: aiosqlite's, the executor's, discord.py's heartbeat
        total += int(number)
        part = next((name for name, marks in PROFILE_PARTS if any(mark in stack for mark in marks)), "other")
        counts[part] = counts.get(part, 0) + int(number)
    return sorted(((part, n / max(1, total)) for part, n in counts.items()), key=lambda item: -item[1])


async def run(jobs: int, users: int, step_delay: float, root: Path = ROOT, profile: Path | None = None) -> int:
    async with FakeDiscord() as fake:
        members = [fake.add_member(f"member{n}") for n in range(users)]
        # Skewed like a real server: a fifth of the members flood (over their 10-job limit), the rest ask for a few.
        heavy = members[: users // 5]
        plan = [m for m in heavy for _ in range(12)]
        light = members[users // 5 :]
        while len(plan) < jobs:
            plan.append(light[len(plan) % len(light)])
        plan = plan[:jobs]

        with tempfile.TemporaryDirectory() as tmp:
            bot = BotProcess(fake, Path(tmp), root=root, fake_step_delay_s=step_delay, log_level="WARNING")
            await bot.start()
            sampler = await _sample(bot, profile) if profile else None
            try:
                started = time.monotonic()
                interactions = await asyncio.gather(
                    *(fake.slash("imagine", prompt=f"load test {n} --seed {n}", user=u) for n, u in enumerate(plan))
                )
                # When the bot answered each one (a callback Discord refused as too late counts too).
                await fake.wait_for(
                    lambda: len(answered_at(fake)) >= len(interactions), timeout=120, what="every acknowledgement"
                )
                acks = [answered_at(fake)[ix.id] - ix.created for ix in interactions]
                if sampler is not None:  # the profile covers the burst up to its last acknowledgement
                    sampler.send_signal(signal.SIGINT)
                    await sampler.wait()
                late = [ix for ix in interactions if ix.callback is None]  # "The application did not respond"
                on_time = [ix for ix in interactions if ix.callback is not None]
                await asyncio.gather(*(ix.wait_for_answer(timeout=120) for ix in on_time))
                accepted = [ix for ix in on_time if not ix.ephemeral]
                refused = [ix for ix in on_time if ix.ephemeral]
                await fake.wait_for(lambda: all(settled(ix) for ix in accepted), timeout=300, what="every result")
                last_result = time.monotonic() - started
                await asyncio.sleep(0.5)  # anything late and duplicated would show up now
                delivered = final_deliveries(fake)
                wanted = {job_id_of(ix): 1 for ix in accepted}
                once = {job: delivered[job] for job in wanted} == wanted and set(delivered) == set(wanted)
                reasons = [ix.messages[-1].content for ix in refused]
                told_why = all("limit" in r or "queue is full" in r for r in reasons)
                with sqlite3.connect(Path(tmp) / "dreamgrid.sqlite3") as db:
                    queued = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
                errors = bot.errors()
            finally:
                await bot.stop()

    print(
        f"{jobs} /imagine from {users} members at once, fake engine {step_delay * 1000:g} ms/step x 8 steps,"
        " 4 renders at once"
    )
    print(
        f"acknowledged: {len(acks)}/{jobs}; p50 {statistics.median(acks) * 1000:.0f} ms, "
        f"p99 {percentile(acks, 99) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms (Discord allows 3000 ms)"
    )
    print(f"accepted {len(accepted)}, delivered exactly once: {once}; refused {len(refused)}, told why: {told_why}")
    print(f"answered too late: {len(late)}; jobs queued {queued} = accepted {len(accepted)}: {queued == len(accepted)}")
    if refused:
        print(f"  e.g. {reasons[0]!r}")
    print(
        f"last result {last_result:.1f} s after the burst; fake Discord violations: {len(fake.violations)}; "
        f"bot errors: {len(errors)}"
    )
    for violation in fake.violations[:5]:
        print("  violation:", violation)
    if profile:
        print(f"profile of the bot until the last acknowledgement (py-spy, {profile}):")
        for part, share in profile_summary(profile):
            print(f"  {share:6.1%}  {part}")
    ok = max(acks) < 3 and once and told_why and queued == len(accepted) and not fake.violations and not errors
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bursts", default="200,500", help="burst sizes, each against a fresh bot")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=0.002)
    parser.add_argument(
        "--baseline", type=Path, help="another checkout (e.g. `git worktree add /tmp/base main`) run before each burst"
    )
    parser.add_argument("--profile", type=Path, help="sample the bot with py-spy into this file (collapsed stacks)")
    args = parser.parse_args()
    failed = 0
    for jobs in (int(n) for n in args.bursts.split(",")):
        if args.baseline:
            print(f"baseline: {args.baseline}")
            asyncio.run(run(jobs, args.users, args.step_delay, args.baseline))
            print(f"this checkout: {ROOT}")
        profile = args.profile.with_suffix(f".{jobs}.txt") if args.profile else None
        failed |= asyncio.run(run(jobs, args.users, args.step_delay, profile=profile))
        print()
    return failed


if __name__ == "__main__":
    raise SystemExit(main())
