"""Engine speed, measured side by side in one run on one model. Not a test: prints ratios.

    TRANSFORMERS_VERBOSITY=error python -m bench.engine_bench [--tile 64] [--steps 20]

1. grid: the engine's 2x2 grid vs naive seed-style code (four `pipe(prompt).images[0]` calls). Goal >= 3x.
2. overhead: the engine vs one raw batched diffusers call for the same 4 images. Goal <= 5 %.
3. throughput: N users' jobs submitted together vs the same jobs one after another. Goal 4 users >= 1.8x.

Each figure is the median of --repeats runs; the contenders run interleaved so drift hits them alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from engine.core import DiffusersEngine  # noqa: E402
from engine.requests import Action, RenderRequest  # noqa: E402

PROMPT = "a red circle on a blue background"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


async def _timed(fn: Callable[[], Awaitable[Any]], device: torch.device) -> float:
    _sync(device)
    started = time.perf_counter()
    await fn()
    _sync(device)
    return time.perf_counter() - started


async def run_benchmarks(
    pipe: Any, *, tile: int, steps: int, repeats: int, device: str = "cpu", users: tuple[int, ...] = (1, 2, 4)
) -> dict[str, float]:
    async with DiffusersEngine(model="bench", pipelines={"bench": pipe}, device=device, batch_window_s=0.05) as engine:
        dev = engine.device
        window = engine.batch_window_s
        pipe = engine._model("bench").text2img  # the same object the engine renders with

        def req(seeds: tuple[int, ...]) -> RenderRequest:
            return RenderRequest(
                action=Action.IMAGINE, prompt=PROMPT, seeds=seeds, width=tile, height=tile, steps=steps
            )

        def naive() -> list[Any]:  # what seed-style code does: one call per image
            return [
                pipe(
                    PROMPT,
                    height=tile,
                    width=tile,
                    num_inference_steps=steps,
                    generator=torch.Generator("cpu").manual_seed(s),
                ).images[0]
                for s in (1, 2, 3, 4)
            ]

        def raw() -> list[Any]:  # the best plain diffusers can do: one batched call
            gens = [torch.Generator("cpu").manual_seed(s) for s in (1, 2, 3, 4)]
            return pipe([PROMPT] * 4, height=tile, width=tile, num_inference_steps=steps, generator=gens).images

        async def grid() -> Any:
            return await engine.render(req((1, 2, 3, 4)))

        async def grid_no_window() -> Any:
            engine.batch_window_s = 0.0
            try:
                return await engine.render(req((1, 2, 3, 4)))
            finally:
                engine.batch_window_s = window

        # warm up every path once (allocator, oneDNN primitives, cuDNN autotune)
        await asyncio.to_thread(naive)
        await asyncio.to_thread(raw)
        await grid()

        times: dict[str, list[float]] = {"naive": [], "raw": [], "engine": [], "engine0": []}
        for _ in range(repeats):
            times["naive"].append(await _timed(lambda: asyncio.to_thread(naive), dev))
            times["raw"].append(await _timed(lambda: asyncio.to_thread(raw), dev))
            times["engine"].append(await _timed(grid, dev))
            times["engine0"].append(await _timed(grid_no_window, dev))
        med = {k: statistics.median(v) for k, v in times.items()}

        # 3. throughput: the same N jobs, serial vs concurrent (the engine batches the concurrent ones)
        def jobs(n: int) -> list[RenderRequest]:
            return [req(tuple(range(10 * i, 10 * i + 4))) for i in range(n)]

        async def serial(n: int) -> None:
            for r in jobs(n):
                await engine.render(r)

        async def concurrent(n: int) -> None:
            await asyncio.gather(*(engine.render(r) for r in jobs(n)))

        through: dict[int, tuple[float, float]] = {}
        for n in users:
            s_times, c_times = [], []
            for _ in range(repeats):
                s_times.append(await _timed(lambda n=n: serial(n), dev))
                c_times.append(await _timed(lambda n=n: concurrent(n), dev))
            through[n] = (statistics.median(s_times), statistics.median(c_times))

    print(
        f"model: {type(pipe).__name__}, tile {tile}px, {steps} steps, device {dev}, "
        f"torch threads {torch.get_num_threads()}, median of {repeats}"
    )
    print(f"  naive 4 single calls : {med['naive']:.3f} s")
    print(f"  raw batched call     : {med['raw']:.3f} s")
    print(f"  engine grid          : {med['engine']:.3f} s  (window <= {window * 1000:.0f} ms and <= 2 % of a render)")
    print(f"  engine grid, window 0: {med['engine0']:.3f} s")
    grid_ratio = med["naive"] / med["engine"]
    grid_ratio0 = med["naive"] / med["engine0"]
    overhead = med["engine"] / med["raw"] - 1
    overhead0 = med["engine0"] / med["raw"] - 1
    print(f"(1) engine grid vs naive           : {grid_ratio:.2f}x, window 0: {grid_ratio0:.2f}x   (goal >= 3x)")
    print(
        f"(2) engine overhead vs raw batched : {overhead * 100:+.1f} %,",
        f"window 0: {overhead0 * 100:+.1f} %  (goal <= 5 %)",
    )
    result = {"grid_ratio": grid_ratio, "grid_ratio0": grid_ratio0, "overhead": overhead, "overhead0": overhead0}
    for n, (s, c) in through.items():
        print(
            f"(3) {n} users: serial {s:.3f} s, concurrent {c:.3f} s -> {s / c:.2f}x"
            + ("   (goal >= 1.8x)" if n == 4 else "")
        )
        result[f"users{n}"] = s / c
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tile", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--model", help="a diffusers folder (default: the random tiny model)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.model:
        from diffusers import AutoPipelineForText2Image

        pipe = AutoPipelineForText2Image.from_pretrained(args.model, local_files_only=True)
        pipe.set_progress_bar_config(disable=True)
    else:
        from engine.tiny import build_tiny_pipeline

        pipe = build_tiny_pipeline()
    asyncio.run(run_benchmarks(pipe, tile=args.tile, steps=args.steps, repeats=args.repeats, device="cpu"))


if __name__ == "__main__":
    main()
