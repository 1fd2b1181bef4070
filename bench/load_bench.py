"""Load: 200 `/imagine` from 50 members at once, the real bot (subprocess) against the fake Discord.

Checks what members would notice: every interaction acknowledged within Discord's 3 s, every
accepted job's result shown exactly once, every refused one told why (ephemerally). Prints the
acknowledgement latencies (p50/p99/max) and the time until the last result.

    /work/main/.venv/bin/python -m bench.load_bench [--jobs 200] [--users 50] [--step-delay 0.002]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.botprocess import BotProcess, final_deliveries, job_id_of, settled  # noqa: E402
from tests.fakediscord import FakeDiscord  # noqa: E402


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def run(jobs: int, users: int, step_delay: float) -> int:
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
            bot = BotProcess(fake, Path(tmp), fake_step_delay_s=step_delay, log_level="WARNING")
            await bot.start()
            try:
                started = time.monotonic()
                interactions = await asyncio.gather(
                    *(fake.slash("imagine", prompt=f"load test {n} --seed {n}", user=u) for n, u in enumerate(plan))
                )
                await fake.wait_for(lambda: all(ix.callback for ix in interactions), timeout=30, what="every ack")
                acks = [ix.acked_in for ix in interactions]
                accepted = [ix for ix in interactions if not ix.ephemeral]
                refused = [ix for ix in interactions if ix.ephemeral]
                await fake.wait_for(
                    lambda: all(settled(ix) for ix in accepted)
                    and all(any(not m.loading and m.content for m in ix.messages) for ix in refused),
                    timeout=120,
                    what="every result and every refusal",
                )
                last_result = time.monotonic() - started
                await asyncio.sleep(0.5)  # anything late and duplicated would show up now
                delivered = final_deliveries(fake)
                wanted = {job_id_of(ix): 1 for ix in accepted}
                once = {job: delivered[job] for job in wanted} == wanted and set(delivered) == set(wanted)
                reasons = [ix.messages[0].content for ix in refused]
                told_why = all("limit" in r or "queue is full" in r for r in reasons)
                errors = bot.errors()
            finally:
                await bot.stop()

    print(f"{jobs} /imagine from {users} members, fake engine {step_delay * 1000:g} ms/step x 8 steps,"
          " 4 renders at once")
    print(f"acknowledged: {len(acks)}/{jobs}; p50 {statistics.median(acks) * 1000:.0f} ms, "
          f"p99 {percentile(acks, 99) * 1000:.0f} ms, max {max(acks) * 1000:.0f} ms (Discord allows 3000 ms)")
    print(f"accepted {len(accepted)}, delivered exactly once: {once}; refused {len(refused)}, told why: {told_why}")
    if refused:
        print(f"  e.g. {reasons[0]!r}")
    print(f"last result {last_result:.1f} s after the burst; fake Discord violations: {len(fake.violations)}; "
          f"bot errors: {len(errors)}")
    for violation in fake.violations[:5]:
        print("  violation:", violation)
    ok = max(acks) < 3 and once and told_why and not fake.violations and not errors
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--step-delay", type=float, default=0.002)
    args = parser.parse_args()
    return asyncio.run(run(args.jobs, args.users, args.step_delay))


if __name__ == "__main__":
    raise SystemExit(main())
