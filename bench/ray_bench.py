"""Grids per minute with one Ray Serve replica vs two, side by side in one run. Not a test: prints ratios.

    .venv/bin/python -m bench.ray_bench [--grids 24] [--in-flight 4] [--rounds 2] [--gpus 0]

One local Ray instance; the same deployment of the shipped model is scaled between 1 and 2
replicas (one CPU thread each, or one GPU each with --gpus 1), alternating, so load from anything
else on the machine drifts over both alike. The workload is what the bot sends: --in-flight
renders outstanding at once (MAX_CONCURRENT_JOBS), each a 2x2 grid of 64 px tiles at 20 steps with
its own prompt and seeds, so the replicas batch what reaches them as they do in production.
Goal: two replicas >= 1.6x one on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import statistics
import time

import ray
from ray import serve

from engine.ray_engine import RayEngine, connect_ray, running_replicas
from engine.requests import Action, RenderRequest

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star")


def _requests(count: int, steps: int):
    scenes = itertools.cycle(itertools.product(COLOURS, SHAPES, COLOURS))
    for n in range(count):
        colour, shape, background = next(scenes)
        yield RenderRequest(
            action=Action.IMAGINE,
            prompt=f"a {colour} {shape} on a {background} background",
            seeds=tuple(range(4 * n, 4 * n + 4)),
            width=64,
            height=64,
            steps=steps,
        )


async def _grids_per_minute(engine: RayEngine, grids: int, in_flight: int, steps: int) -> float:
    slots = asyncio.Semaphore(in_flight)

    async def one(request: RenderRequest) -> None:
        async with slots:
            await engine.render(request)

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in _requests(grids, steps)))
    return grids / (time.perf_counter() - started) * 60


def _scaled_to(replicas: int, gpus: float) -> RayEngine:
    engine = RayEngine(
        min_replicas=replicas,
        max_replicas=replicas,
        gpus_per_replica=gpus,
        cpus_per_replica=1,
        device="cuda" if gpus else "cpu",
    )
    engine.deploy()  # scales the running deployment; replicas already up keep their loaded model
    while running_replicas() != replicas:
        time.sleep(0.5)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=24, help="grids per measurement")
    parser.add_argument("--in-flight", type=int, default=4, help="renders outstanding at once")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=2, help="1-vs-2 pairs, alternating")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per replica (0: CPU, one thread each)")
    args = parser.parse_args()

    connect_ray(local_cpus=2 if not args.gpus else None)
    print(f"cores on this machine: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.1f}")
    rates: dict[int, list[float]] = {1: [], 2: []}
    engine = None
    for _ in range(args.rounds):
        for replicas in (1, 2):
            engine = _scaled_to(replicas, args.gpus)
            asyncio.run(_grids_per_minute(engine, 2 * replicas, args.in_flight, args.steps))  # warm every replica
            rate = asyncio.run(_grids_per_minute(engine, args.grids, args.in_flight, args.steps))
            rates[replicas].append(rate)
            print(f"{replicas} replica(s): {rate:.1f} grids/min ({args.grids} grids, {args.in_flight} in flight)")
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print(f"median: 1 replica {one:.1f} grids/min, 2 replicas {two:.1f} grids/min -> {two / one:.2f}x (goal >= 1.6x)")
    if engine is not None:
        engine.close()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
