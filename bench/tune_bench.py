"""Does a LoRA trained by /tune carry its moodboard's trait into new prompts? On the shipped model.

The moodboard: pictures drawn by the training set's drawer (engine/training/dataset.py), random scenes,
each with horizontal stripes over the whole picture (every other 8 px band darkened). The LoRA is
trained through `DiffusersEngine.tune`, the code path /tune takes. Then new prompts (scenes held out of
the model's training) are drawn with fixed seeds without and with the LoRA, and the trait is judged
from pixels: stripe energy, the mean absolute difference between neighbouring rows over that between
neighbouring columns of the grey image (1: no direction; horizontal stripes make it large).

    .venv/bin/python -m bench.tune_bench [--steps 300] [--pictures 12]

Prints the scores side by side and their ratio; BENCHMARKS.md records a run. Re-runnable whatever the
shipped model's weights are (it reads engine/weights/dreamgrid-tiny as it is).
"""

from __future__ import annotations

import argparse
import asyncio
import random
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from engine.core import DiffusersEngine
from engine.params import SHIPPED_GUIDANCE
from engine.requests import Action, LoraWeight, RenderRequest, TuneRequest
from engine.training.dataset import all_combos, caption, held_out_combos, random_scene, render

BAND = 8  # px: one latent row of the shipped model (its VAE cannot keep 4 px bands: 0.97 after a round trip)
SEEDS = (1, 2, 3, 4)


def striped(picture: Image.Image) -> Image.Image:
    pixels = np.asarray(picture, dtype=np.float32).copy()
    rows = (np.arange(pixels.shape[0]) // BAND) % 2 == 0
    pixels[rows] *= 0.45
    return Image.fromarray(pixels.round().astype(np.uint8))


def stripe_energy(picture: Image.Image) -> float:
    grey = np.asarray(picture.convert("L"), dtype=np.float32)
    across_rows = np.abs(np.diff(grey, axis=0)).mean()
    across_columns = np.abs(np.diff(grey, axis=1)).mean()
    return float(across_rows / max(across_columns, 1e-6))


def moodboard(count: int, seed: int = 0) -> list[Image.Image]:
    rng = random.Random(seed)
    held_out = set(held_out_combos())
    combos = [c for c in all_combos() if c not in held_out]
    return [striped(render(random_scene(rng, combos))) for _ in range(count)]


def prompts(count: int) -> list[str]:
    rng = random.Random(1)
    cases = held_out_combos()[:count]
    return [caption(random_scene(random.Random(i), [combo]), rng) for i, combo in enumerate(cases)]


async def draw(engine: DiffusersEngine, texts: list[str], loras: tuple[LoraWeight, ...]) -> list[Image.Image]:
    pictures = []
    for text in texts:
        request = RenderRequest(
            action=Action.IMAGINE, prompt=text, seeds=SEEDS, width=64, height=64, loras=loras,
            guidance_scale=SHIPPED_GUIDANCE,
        )  # fmt: skip
        pictures.extend((await engine.render(request)).images)
    return pictures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pictures", type=int, default=12)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--weight", type=float, default=1.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    board = moodboard(args.pictures)
    texts = prompts(args.prompts)
    with tempfile.TemporaryDirectory() as folder:
        async with DiffusersEngine("dreamgrid-tiny", device="cpu") as engine:
            started = time.perf_counter()
            tuned = await engine.tune(
                TuneRequest(
                    pictures=tuple(board),
                    output=str(Path(folder) / "stripes.safetensors"),
                    checkpoint=str(Path(folder) / "stripes.ckpt"),
                    steps=args.steps,
                )
            )
            trained_s = time.perf_counter() - started
            plain = await draw(engine, texts, ())
            styled = await draw(engine, texts, (LoraWeight("stripes", tuned.output, args.weight),))
    board_score = np.mean([stripe_energy(p) for p in board])
    plain_score = np.mean([stripe_energy(p) for p in plain])
    styled_score = np.mean([stripe_energy(p) for p in styled])
    print(f"trained {args.steps} steps on {args.pictures} pictures in {trained_s:.0f} s (CPU, 1 thread)")
    print(f"stripe energy (rows/columns)  moodboard {board_score:.2f}")
    print(f"new prompts ({len(texts)} × {len(SEEDS)} seeds)  without LoRA {plain_score:.2f}  with {styled_score:.2f}")
    print(f"ratio with/without: {styled_score / plain_score:.2f}x")
    pairs = zip((stripe_energy(i) for i in styled), (stripe_energy(i) for i in plain), strict=True)
    wins = sum(with_lora > without for with_lora, without in pairs)
    print(f"pictures more striped with the LoRA than without (same prompt and seed): {wins}/{len(plain)}")


if __name__ == "__main__":
    asyncio.run(main())
