"""Every model family's tiny random pipeline through the engine, side by side, on this machine.

    python -m bench.family_bench                 # CPU, one thread, 4 x 64² tiles, 20 steps
    python -m bench.family_bench --steps 8 --threads 2

For each family (engine/tiny.py) it saves the tiny pipeline as a diffusers folder, loads it through
the engine (engine/loading.py) and times, median of --repeats: a 2x2 grid, a 4-tile variation at
strength 0.75 and a 2x upscale, each as one request. What it says: what the family layer costs on top
of diffusers' pipelines at a size where the denoiser is nearly free (the tiny transformers have one
layer), so prompt encoding, packing and decoding show. Not a measure of the real models.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import torch

from engine.core import DiffusersEngine
from engine.params import UPSCALE_SUBTLE, VARY_STRONG
from engine.requests import Action, RenderRequest
from engine.tiny import build

FAMILIES = ("sd", "sdxl", "sd3", "flux", "flux2-klein", "z-image")


async def measure(family: str, folder: Path, steps: int, repeats: int) -> dict[str, float | str]:
    started = time.perf_counter()
    async with DiffusersEngine(model=family, sources={family: str(folder)}, device="cpu", batch_window_s=0.0) as e:
        loaded = time.perf_counter() - started
        guidance = e.defaults().guidance_scale
        common = dict(prompt="a red circle on a blue background", width=64, height=64, steps=steps)
        common["guidance_scale"] = 7.5 if guidance is None else guidance
        grid = RenderRequest(action=Action.IMAGINE, seeds=(1, 2, 3, 4), **common)
        source = (await e.render(grid)).images[0]
        row: dict[str, float | str] = {"family": e.family().name, "load s": loaded}
        runs = {
            "grid s": grid,
            "variation s": RenderRequest(
                action=Action.VARIATION, seeds=(5, 6, 7, 8), init_image=source, strength=VARY_STRONG, **common
            ),
            "upscale s": RenderRequest(
                action=Action.UPSCALE, seeds=(3,), init_image=source, strength=UPSCALE_SUBTLE, **common
            ),
        }
        for name, request in runs.items():
            if e.supports(None, request.action) is not None:
                row[name] = "refused"
                continue
            await e.render(request)  # warm-up
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                await e.render(request)
                times.append(time.perf_counter() - t)
            row[name] = statistics.median(times)
    return row


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families.split(","):
            folder = build(family, Path(tmp) / family)
            rows.append(asyncio.run(measure(family, folder, args.steps, args.repeats)))
    columns = ["family", "load s", "grid s", "variation s", "upscale s"]
    shape = f"4 x 64², {args.steps} steps, CPU, {args.threads} thread(s), median of {args.repeats}"
    print(f"\n**tiny families, {shape}**\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
