"""Grids per minute with one Ray Serve replica vs two, beside the same without Ray. Not a test: prints ratios.

    .venv/bin/python -m bench.ray_bench [--grids 16] [--in-flight 8] [--rounds 3] [--gpus 0]

Two measurements, side by side in one run, each alternating 1 and 2 workers for --rounds rounds
so that load from anything else on the machine drifts over both alike:

- **without Ray** (the ceiling): one process vs two processes, each a `DiffusersEngine` of the
  shipped model on one torch thread, each offered the same load. What two replicas could at best
  give on this machine.
- **Ray Serve**: one local Ray instance; the same deployment of the shipped model scaled between 1
  and 2 replicas (one CPU thread each, or one GPU each with --gpus 1).

The load is what the bot sends, offered per worker so that every worker runs the same batches:
--in-flight renders outstanding per worker (8 = two full CPU batches of 4 grids: one drawing,
the next one waiting), --grids finished per worker per measurement, each a 2x2 grid of 64 px
tiles at 20 steps with its own prompt and seeds. The batch each render shared is printed.
Goal: two replicas >= 1.6x one on 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import multiprocessing
import os
import statistics
import time
from collections.abc import Iterator

import psutil

from engine.requests import Action, RenderRequest

COLOURS = ("red", "green", "blue", "yellow", "purple", "orange", "white", "black")
SHAPES = ("circle", "square", "triangle", "star")


def _requests(count: int, steps: int, start: int = 0) -> Iterator[RenderRequest]:
    scenes = itertools.cycle(itertools.product(COLOURS, SHAPES, COLOURS))
    for n in range(start, start + count):
        colour, shape, background = next(scenes)
        yield RenderRequest(
            action=Action.IMAGINE,
            prompt=f"a {colour} {shape} on a {background} background",
            seeds=tuple(range(4 * n, 4 * n + 4)),
            width=64,
            height=64,
            steps=steps,
        )


async def _render_all(engine, requests: list[RenderRequest], in_flight: int) -> tuple[float, collections.Counter]:
    """Seconds to render all of `requests`, `in_flight` at a time, and how many shared each batch size."""
    slots = asyncio.Semaphore(in_flight)
    batches: collections.Counter[int] = collections.Counter()

    async def one(request: RenderRequest) -> None:
        async with slots:
            batches[(await engine.render(request)).batch_size] += 1

    started = time.perf_counter()
    await asyncio.gather(*(one(r) for r in requests))
    return time.perf_counter() - started, batches


def _own_cpu() -> dict[int, tuple[float, float]]:
    """(start time, CPU seconds so far) of this process and everything it started (Ray, workers)."""
    me = psutil.Process()
    seen = {}
    for process in [me, *me.children(recursive=True)]:
        try:
            times = process.cpu_times()
            seen[process.pid] = (process.create_time(), times.user + times.system)
        except psutil.Error:
            pass
    return seen


def _machine_busy() -> float:
    """CPU seconds the whole machine has been busy (other engineers' processes are not all visible to psutil)."""
    times = psutil.cpu_times()
    return times.user + times.nice + times.system + times.irq + times.softirq + getattr(times, "steal", 0.0)


class CpuWindow:
    """The cores this run's own processes kept busy over a stretch of time, and those anything else did.

    The first says whether the workers had the cores they were offered and what Ray's own
    processes cost; the second whether the machine was quiet (other engineers' tests, a training
    run), which a load average before and after can miss.
    """

    def __enter__(self) -> CpuWindow:
        self._own, self._busy, self._started = _own_cpu(), _machine_busy(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        own, busy, wall = _own_cpu(), _machine_busy(), time.perf_counter() - self._started
        self.own: dict[int, float] = {}
        for pid, (created, cpu) in own.items():
            earlier = self._own.get(pid)
            self.own[pid] = (cpu - earlier[1] if earlier is not None and earlier[0] == created else cpu) / wall
        self.others = max(0.0, (busy - self._busy) / wall - sum(self.own.values()))


# -- without Ray: whole processes, one torch thread each ----------------------------------------


def _process_worker(index: int, grids: int, in_flight: int, steps: int, ready, done, results) -> None:
    import torch

    from engine.core import DiffusersEngine

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)

    async def run() -> None:
        async with DiffusersEngine(device="cpu") as engine:
            await _render_all(engine, list(_requests(in_flight, steps, start=1000 * index)), in_flight)  # warm up
            ready.wait()  # every process starts at once, when the parent has started counting CPU
            seconds, batches = await _render_all(engine, list(_requests(grids, steps, start=1000 * index)), in_flight)
            results.put((seconds, dict(batches)))
            done.wait()  # alive until the parent has counted this process's CPU

    asyncio.run(run())


def _processes_rate(workers: int, grids: int, in_flight: int, steps: int):
    """Grids per minute from `workers` processes at once, the batches they ran, and a CpuWindow over them."""
    context = multiprocessing.get_context("spawn")
    ready, done, results = context.Barrier(workers + 1), context.Barrier(workers + 1), context.Queue()
    processes = [
        context.Process(target=_process_worker, args=(i, grids, in_flight, steps, ready, done, results))
        for i in range(workers)
    ]
    for process in processes:
        process.start()
    with CpuWindow() as cpu:
        ready.wait()
        answers = [results.get() for _ in processes]
    done.wait()
    for process in processes:
        process.join()
    batches: collections.Counter[int] = collections.Counter()
    for _, seen in answers:
        batches.update(seen)
    return workers * grids / max(seconds for seconds, _ in answers) * 60, batches, cpu


# -- Ray Serve ----------------------------------------------------------------------------------


def _scaled_to(replicas: int, gpus: float, progress_interval_s: float):
    from engine.ray_engine import RayEngine, running_replicas

    engine = RayEngine(
        min_replicas=replicas,
        max_replicas=replicas,
        gpus_per_replica=gpus,
        cpus_per_replica=1,
        device="cuda" if gpus else "cpu",
        progress_interval_s=progress_interval_s,
    )
    engine.deploy()  # scales the running deployment; replicas already up keep their loaded model
    while running_replicas() != replicas:
        time.sleep(0.5)
    return engine


def _ray_rate(engine, replicas: int, grids: int, in_flight: int, steps: int):
    """Grids per minute from `replicas` replicas, the batches they ran, and the cores kept busy by
    the replicas, by the rest of Ray and this driver, and by anything else."""
    # A full load's worth first: Serve gives every replica its share, so each has drawn (a fresh
    # replica's first batches are slow) before anything is timed.
    warm = list(_requests(in_flight * replicas, steps))
    asyncio.run(_render_all(engine, warm, in_flight * replicas))
    requests = list(_requests(grids * replicas, steps))
    with CpuWindow() as cpu:
        seconds, batches = asyncio.run(_render_all(engine, requests, in_flight * replicas))
    replica_pids = {info.pid for info in engine.replicas.values()}
    renders = sum(busy for pid, busy in cpu.own.items() if pid in replica_pids)
    return grids * replicas / seconds * 60, batches, renders, sum(cpu.own.values()) - renders, cpu.others


def _report(name: str, rates: dict[int, list[float]], one_worker: str, two_workers: str) -> float:
    one, two = statistics.median(rates[1]), statistics.median(rates[2])
    print(f"{name}: median {one_worker} {one:.1f} grids/min, {two_workers} {two:.1f} grids/min -> {two / one:.2f}x")
    return two / one


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grids", type=int, default=16, help="grids per worker per measurement")
    parser.add_argument("--in-flight", type=int, default=8, help="renders outstanding per worker")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="1-vs-2 pairs, alternating")
    parser.add_argument("--gpus", type=float, default=0, help="GPUs per replica (0: CPU, one thread each)")
    parser.add_argument(
        "--progress-interval",
        type=float,
        default=2.0,
        help="PROGRESS_INTERVAL_S the replicas serve (0: an event every step, as before they were throttled)",
    )
    parser.add_argument("--skip-ceiling", action="store_true", help="measure Ray only")
    parser.add_argument("--skip-ray", action="store_true", help="measure the ceiling only")
    args = parser.parse_args()
    print(f"cores on this machine: {os.cpu_count()}; load average before: {os.getloadavg()[0]:.2f}")
    offered = f"{args.in_flight} in flight and {args.grids} grids per worker"

    ceiling = None
    if not args.skip_ceiling and not args.gpus:
        rates: dict[int, list[float]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for workers in (1, 2):
                rate, batches, cpu = _processes_rate(workers, args.grids, args.in_flight, args.steps)
                rates[workers].append(rate)
                print(
                    f"no Ray, {workers} process(es): {rate:.1f} grids/min ({offered}; batches {dict(batches)});"
                    f" cores busy: workers {sum(cpu.own.values()):.2f}, anything else {cpu.others:.2f}"
                )
        ceiling = _report("no Ray", rates, "1 process", "2 processes")

    if args.skip_ray:
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        return
    import ray
    from ray import serve

    from engine.ray_engine import connect_ray

    connect_ray(local_cpus=2 if not args.gpus else None)
    rates = {1: [], 2: []}
    engine = None
    for _ in range(args.rounds):
        for replicas in (1, 2):
            engine = _scaled_to(replicas, args.gpus, args.progress_interval)
            rate, batches, renders, rest, others = _ray_rate(engine, replicas, args.grids, args.in_flight, args.steps)
            rates[replicas].append(rate)
            print(
                f"Ray, {replicas} replica(s): {rate:.1f} grids/min ({offered}; batches {dict(batches)});"
                f" cores busy: replicas {renders:.2f}, rest of Ray + driver {rest:.2f}, anything else {others:.2f}"
            )
    ratio = _report("Ray Serve", rates, "1 replica", "2 replicas")
    print(f"load average after: {os.getloadavg()[0]:.2f}")
    if ceiling is not None:
        print(f"two replicas reach {ratio / ceiling:.0%} of what two processes without Ray reach ({ceiling:.2f}x)")
    print("goal: two replicas >= 1.6x one")
    if engine is not None:
        engine.close()
    serve.shutdown()
    ray.shutdown()


if __name__ == "__main__":
    main()
