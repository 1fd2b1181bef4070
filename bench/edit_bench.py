"""Do edits of a member's own pictures keep the pictures? /variation with no prompt and /blend on
the shipped model, each beside what it did before, in one run. Not a test.

    python -m bench.edit_bench [--pictures 8] [--seeds 4] [--blends 6]

**Vary a member's picture with no prompt.** The pictures are scenes drawn by the training set's
drawer (`engine/training/dataset.py`) in the triples dreamgrid-tiny never saw (`dreamgrid eval`'s),
so neither side can lean on a memorised scene. Each is varied at Vary (Strong) and (Subtle), one
tile per seed, two ways: with the empty prompt the engine was given before (the model draws
whatever it likes), and with the picture's likeliest description, which the scheduler now puts in
the missing prompt (`Kind.describes_missing_prompt`). Judged from pixels: **drift**, the mean
absolute difference from the picture (0-255), and **kept**, the share of tiles in which the pixel
judge of `dreamgrid eval` reads the picture's own background and foreground colours.

**/blend.** Blends of 2-4 such scenes, no two sharing a colour, through the engine's blend action
(image-to-image: latents mixed per tile, `engine/actions/blend.py`) beside the plain mean of the
pictures' latents re-noised to the same strength (`BLEND_STRENGTH`). **Every picture in every
tile**: the share of tiles in which each picture's two colours are the nearest palette colours
(of all the blended pictures' colours) of at least `TRACE_SHARE` of the pixels.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine import params  # noqa: E402
from engine.requests import Action, DescribeRequest, ImagePromptMethod, RenderRequest  # noqa: E402
from engine.training.dataset import COLOURS, SIZES, Scene, held_out_combos, render  # noqa: E402
from engine.training.evaluate import classify, colour_shares  # noqa: E402

TILE = 64
TRACE_SHARE = 0.05  # a picture's colours on at least 5 % of a tile's pixels: a trace a member sees


def pictures(count: int) -> list[Scene]:
    rng = random.Random("dreamgrid-edit-bench")
    combos = held_out_combos()
    sizes, positions = [s for s in SIZES if s != "small"], ("center", "left", "right", "top", "bottom")
    return [Scene(*combos[i % len(combos)], rng.choice(sizes), rng.choice(positions)) for i in range(count)]


def blend_sets(count: int) -> list[list[Scene]]:
    """`count` sets of 2-4 scenes (cycling), no colour used twice within a set: eight colours make
    four pictures at most whose traces can be told apart."""
    rng = random.Random("dreamgrid-edit-bench-blend")
    sets = []
    for i in range(count):
        n = 2 + i % 3
        colours = rng.sample(list(COLOURS), 2 * n)
        sets.append(
            [Scene(rng.choice(("circle", "square", "triangle")), colours[2 * k], colours[2 * k + 1], "large", "center")
             for k in range(n)]
        )  # fmt: skip
    return sets


def drift(tile: Image.Image, picture: Image.Image) -> float:
    return float(np.abs(np.asarray(tile, dtype=float) - np.asarray(picture, dtype=float)).mean())


async def vary_pictures(engine, scenes: list[Scene], seeds: tuple[int, ...]) -> dict[tuple[str, str], list]:
    out: dict[tuple[str, str], list] = {}
    for scene in scenes:
        picture = render(scene)
        described = (await engine.describe(DescribeRequest(image=picture, count=1))).prompts[0]
        for label, strength in (("Strong", params.VARY_STRONG), ("Subtle", params.VARY_SUBTLE)):
            for way, prompt in (("no prompt (before)", ""), ("its description (now)", described)):
                request = RenderRequest(
                    action=Action.VARIATION, prompt=prompt, seeds=seeds, width=TILE, height=TILE,
                    steps=params.img2img_steps(20, strength), strength=strength, init_image=picture,
                    guidance_scale=params.SHIPPED_GUIDANCE,
                )  # fmt: skip
                for tile in (await engine.render(request)).images:
                    seen = classify(tile)
                    kept = seen.bg == scene.bg and seen.fg == scene.fg
                    out.setdefault((label, way), []).append((drift(tile, picture), kept))
    return out


def mean_latent_blend(pipe, images: list[Image.Image], seeds: tuple[int, ...]) -> list[Image.Image]:
    """The plain mean of the pictures' latents, re-noised to BLEND_STRENGTH and drawn with no prompt."""
    from diffusers import StableDiffusionImg2ImgPipeline

    img2img = StableDiffusionImg2ImgPipeline.from_pipe(pipe)
    img2img.set_progress_bar_config(disable=True)
    with torch.no_grad():
        x = img2img.image_processor.preprocess(images)
        latents = pipe.vae.encode(x).latent_dist.mean * pipe.vae.config.scaling_factor
    mean = latents.mean(0, keepdim=True).repeat(len(seeds), 1, 1, 1)
    return img2img(
        [""] * len(seeds), image=mean, strength=params.BLEND_STRENGTH, num_inference_steps=20,
        guidance_scale=params.SHIPPED_GUIDANCE, generator=[torch.Generator().manual_seed(s) for s in seeds],
    ).images  # fmt: skip


async def blends(engine, sets: list[list[Scene]], seeds: tuple[int, ...]) -> dict[tuple[str, int], list[bool]]:
    from diffusers import StableDiffusionPipeline

    from engine.core import TINY_MODEL, WEIGHTS_DIR

    pipe = StableDiffusionPipeline.from_pretrained(
        WEIGHTS_DIR / TINY_MODEL, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    out: dict[tuple[str, int], list[bool]] = {}
    for scenes in sets:
        images = [render(s) for s in scenes]
        palettes = [(s.fg, s.bg) for s in scenes]
        request = RenderRequest(
            action=Action.BLEND, prompt="", seeds=seeds, width=TILE, height=TILE, steps=20,
            strength=params.BLEND_STRENGTH, blend_images=tuple(images),
            image_prompt_method=ImagePromptMethod.IMAGE_TO_IMAGE, guidance_scale=params.SHIPPED_GUIDANCE,
        )  # fmt: skip
        now = (await engine.render(request)).images
        before = mean_latent_blend(pipe, images, seeds)
        for key, tiles in (("mean of the latents (before)", before), ("blend action (now)", now)):
            hits = [min(colour_shares(tile, palettes)) >= TRACE_SHARE for tile in tiles]
            out.setdefault((key, len(scenes)), []).extend(hits)
    return out


async def main_async(args) -> None:
    from engine.core import DiffusersEngine

    seeds = tuple(range(1, args.seeds + 1))
    started = time.perf_counter()
    async with DiffusersEngine(model="dreamgrid-tiny", device="cpu", batch_window_s=0.0) as engine:
        varied = await vary_pictures(engine, pictures(args.pictures), seeds)
        blended = await blends(engine, blend_sets(args.blends), seeds)
    elapsed = time.perf_counter() - started
    print(f"dreamgrid-tiny, {args.pictures} pictures x {args.seeds} seeds, {args.blends} blends ({elapsed:.0f} s)")
    print("\n| Vary, a member's picture, prompt | drift (0-255) | kept its colours |")
    print("|---|---|---|")
    for (label, way), rows in varied.items():
        drifts, kept = [d for d, _ in rows], [k for _, k in rows]
        print(f"| {label}, {way} | {np.mean(drifts):.1f} | {np.mean(kept):.0%} ({sum(kept)}/{len(kept)}) |")
    for label in ("Strong", "Subtle") if varied else ():
        before = np.mean([d for d, _ in varied[label, "no prompt (before)"]])
        now = np.mean([d for d, _ in varied[label, "its description (now)"]])
        print(f"  Vary ({label}): drift now / before = {now / before:.2f}x")
    counts = sorted({n for _, n in blended})
    heading = " | ".join(f"{n} pictures" for n in counts)
    print(f"\n| /blend: tiles with every picture's colours on >= {TRACE_SHARE:.0%} | {heading} |")
    print("|---|" + "---|" * len(counts))
    for key in ("mean of the latents (before)", "blend action (now)"):
        cells = [blended[key, n] for n in counts]
        print(f"| {key} | " + " | ".join(f"{np.mean(h):.0%} ({sum(h)}/{len(h)})" for h in cells) + " |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pictures", type=int, default=8)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--blends", type=int, default=8, help="blend sets, cycling through 2-4 pictures")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
