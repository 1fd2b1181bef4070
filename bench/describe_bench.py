"""/describe on the shipped describer, before and after issue #24, side by side. Not a test.

    python -m bench.describe_bench [--scenes 96] [--drawn 48]

1. Position: on held-out scenes and on pictures dreamgrid-tiny drew, how often the four prompts name
   more than one position (before: the four likeliest candidates as they come; now:
   `engine.describe.agree_on_position`), and how often a named position is the scene's.
2. Familiarity: the distance (`engine.describe.Familiarity`) of held-out scenes, of dreamgrid-tiny's
   pictures and of pictures far outside what the describer knows (noise, photo-like pictures, text,
   many colours), and the share of each that `Describer.knows` refuses at FAMILIAR_LIMIT.
3. Time: one describe, and the familiarity check it now runs first.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.describe import (  # noqa: E402
    FAMILIAR_LIMIT,
    PROMPTS_PER_DESCRIBE,
    SHIPPED_DESCRIBER,
    WEIGHTS_DIR,
    Describer,
    pick_distinct,
    position_of,
)
from engine.training.dataset import Scene, render  # noqa: E402
from engine.training.describer import eval_scenes  # noqa: E402


def noise(rng: np.random.Generator) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))


def photo_like(rng: np.random.Generator) -> Image.Image:
    """Smooth colour fields with grain: what a downscaled photo looks like to a 64 px describer."""
    field = rng.normal(0, 1, (8, 8, 3))
    field = ((field - field.min()) / (field.max() - field.min()) * 255).astype(np.uint8)
    smooth = np.asarray(Image.fromarray(field).resize((64, 64), Image.Resampling.BICUBIC), dtype=float)
    return Image.fromarray(np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8))


def text(rng: np.random.Generator) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (64, 64), background)
    draw = ImageDraw.Draw(image)
    for line in range(5):
        draw.text((2, 2 + 12 * line), "the quick brown"[int(rng.integers(0, 6)) :], fill=(0, 0, 0))
    return image


def many_colours(rng: np.random.Generator) -> Image.Image:
    cells = int(rng.choice([4, 6, 8, 16]))
    return Image.fromarray(rng.integers(0, 256, (cells, cells, 3), dtype=np.uint8)).resize(
        (64, 64), Image.Resampling.NEAREST
    )


def drawn(count: int) -> tuple[list[Image.Image], list[Scene]]:
    """dreamgrid-tiny's pictures of held-out prompts, with the scenes they were asked for."""
    from engine.training.evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS, eval_cases, generate, load_pipeline

    cases = eval_cases(1)[:count]
    pipe = load_pipeline(str(WEIGHTS_DIR / "dreamgrid-tiny"))
    return generate(pipe, cases, DEFAULT_STEPS, DEFAULT_GUIDANCE, 64), [case.scene for case in cases]


def positions(describer: Describer, images: list[Image.Image], scenes: list[Scene]) -> dict[str, tuple[float, float]]:
    """(before, now) for: four prompts naming two or more positions; a named position being right."""
    split = {"before": 0, "now": 0}
    named = {"before": 0, "now": 0}
    right = {"before": 0, "now": 0}
    for image, scene in zip(images, scenes, strict=True):
        texts, _ = describer.candidates(describer._pixels(image), PROMPTS_PER_DESCRIBE, None)
        results = {"before": pick_distinct(texts, PROMPTS_PER_DESCRIBE), "now": describer.describe(image)}
        for when, prompts in results.items():
            found = [position_of(p) for p in prompts]
            split[when] += len(set(found) - {None}) > 1
            for where in found:
                if where is not None:
                    named[when] += 1
                    right[when] += where == scene.position
    n = len(images)
    return {
        "four prompts split on position": (split["before"] / n, split["now"] / n),
        "prompts naming a position": (
            named["before"] / (PROMPTS_PER_DESCRIBE * n),
            named["now"] / (PROMPTS_PER_DESCRIBE * n),
        ),
        "named positions that are right": (
            right["before"] / max(1, named["before"]),
            right["now"] / max(1, named["now"]) if named["now"] else float("nan"),
        ),
    }


def share(value: float) -> str:
    return "none" if value != value else f"{value:.0%}"  # NaN: no position named at all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", type=int, default=96, help="held-out scenes")
    parser.add_argument("--drawn", type=int, default=48, help="pictures dreamgrid-tiny draws")
    parser.add_argument("--outside", type=int, default=24, help="pictures of each far-outside kind")
    args = parser.parse_args()
    torch.set_num_threads(1)

    started = time.perf_counter()
    describer = Describer.load(SHIPPED_DESCRIBER, device=torch.device("cpu"))
    load_s = time.perf_counter() - started
    scenes = eval_scenes(args.scenes)
    held_out = [render(scene) for scene in scenes]
    tiny_images, tiny_scenes = drawn(args.drawn)

    print("1. Position (the shipped describer)")
    print(f"   {'':34} {'before':>8} {'now':>8}")
    for label, images, truth in (
        ("held-out scenes", held_out, scenes),
        ("dreamgrid-tiny's pictures", tiny_images, tiny_scenes),
    ):
        print(f"   {label}")
        for name, (before, now) in positions(describer, images, truth).items():
            print(f"   {name:34} {share(before):>8} {share(now):>8}")

    print(f"\n2. Familiarity: distance (min / median / max) and refused at {FAMILIAR_LIMIT:g}")
    rng = np.random.default_rng(0)
    kinds: dict[str, list[Image.Image]] = {
        "held-out scenes": held_out,
        "dreamgrid-tiny's pictures": tiny_images,
        "noise": [noise(rng) for _ in range(args.outside)],
        "photo-like": [photo_like(rng) for _ in range(args.outside)],
        "text": [text(rng) for _ in range(args.outside)],
        "many colours": [many_colours(rng) for _ in range(args.outside)],
    }
    for label, images in kinds.items():
        distances = [describer.distance(image) or 0.0 for image in images]
        refused = sum(not describer.knows(image) for image in images) / len(images)
        low, mid, high = min(distances), statistics.median(distances), max(distances)
        print(f"   {label:28} {low:6.1f} {mid:6.1f} {high:6.1f}   refused {refused:4.0%}")

    print("\n3. Time (one CPU thread)")
    image = held_out[0]
    timings = {"describe": [], "familiarity check": []}
    for _ in range(5):
        t = time.perf_counter()
        describer.describe(image)
        timings["describe"].append(time.perf_counter() - t)
        t = time.perf_counter()
        describer.knows(image)
        timings["familiarity check"].append(time.perf_counter() - t)
    for name, values in timings.items():
        print(f"   {name:28} {statistics.median(values) * 1000:7.1f} ms")
    print(f"   {'load (with the reference)':28} {load_s * 1000:7.0f} ms")


if __name__ == "__main__":
    main()
