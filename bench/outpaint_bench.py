"""Zoom Out and Pan on the shipped model: is the kept object cloned into the new area? Not a test.

    python -m bench.outpaint_bench [--seeds 24] [--strengths 1,0.9] [--zooms 2,1.5] [--save DIR]

For each prompt × seed, dreamgrid-tiny draws a 64 px tile (`--seed` as the product draws it); then
Zoom Out 2x (the tile at half size in the middle of a 64 px frame) and Pan ➡ (32 px more on the
right) run the engine's outpaint action on it. Foreground blobs are counted from pixels: pixels far
(RGB distance over BLOB_DISTANCE) from the picture's background colour (the median of its border),
4-connected, of at least BLOB_MIN_PIXELS. Two rates, side by side:

- **clone**: the new area holds a blob of its own (most of its pixels outside the kept picture's
  box): a second object drawn beside the kept one;
- **unasked**: the model's own rate of a second object, for scale: a plain /imagine of the same
  prompt at the edit's canvas size (64×64 for Zoom Out, 96×64 for Pan) holding two or more blobs.

Zoom Out's clones are also split by the kept object's size after the zoom (the longer side of its
largest blob's bounding box, divided by the zoom): under SMALL_KEPT px, the smallest object the
model was trained on, or not.

Done when clone ≤ unasked. `--strengths` compares how far the new area is re-noised: 1 draws it
from pure noise; below 1 it starts from the kept picture's own colours smeared outwards
(`engine.actions.outpaint.fill_new_area`), noised to that strength.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import deque

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine import canvas  # noqa: E402
from engine.actions import outpaint as outpaint_action  # noqa: E402
from engine.params import SHIPPED_GUIDANCE, tile_seeds  # noqa: E402
from engine.requests import Action, RenderRequest  # noqa: E402
from engine.training.dataset import SIZES  # noqa: E402

PROMPTS = (
    "a red circle on a blue background",
    "a yellow triangle on a green background",
    "a white square on a black background",
    "a purple circle on an orange background",
)
BLOB_DISTANCE = 90.0  # RGB distance from the background that counts as foreground
BLOB_MIN_PIXELS = 6  # smaller specks are noise, not an object (a 64 px tile's objects are 100+ px)
STEPS = 20
SMALL_KEPT = min(SIZES.values())  # px: the smallest object the shipped model was trained on


def blobs(image: Image.Image) -> list[set[tuple[int, int]]]:
    """The picture's foreground blobs: 4-connected pixels far from its border's median colour."""
    px = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w, _ = px.shape
    border = np.concatenate([px[0], px[-1], px[:, 0], px[:, -1]])
    far = np.sqrt(((px - np.median(border, axis=0)) ** 2).sum(axis=2)) > BLOB_DISTANCE
    seen = np.zeros_like(far)
    found = []
    for y, x in zip(*np.nonzero(far), strict=True):
        if seen[y, x]:
            continue
        blob, queue = set(), deque([(int(y), int(x))])
        seen[y, x] = True
        while queue:
            cy, cx = queue.popleft()
            blob.add((cy, cx))
            for ny, nx in ((cy + 1, cx), (cy - 1, cx), (cy, cx + 1), (cy, cx - 1)):
                if 0 <= ny < h and 0 <= nx < w and far[ny, nx] and not seen[ny, nx]:
                    seen[ny, nx] = True
                    queue.append((ny, nx))
        if len(blob) >= BLOB_MIN_PIXELS:
            found.append(blob)
    return found


def object_size(image: Image.Image) -> int:
    """The longer side of the bounding box of the picture's largest blob (0: none), as SIZES measures."""
    found = blobs(image)
    if not found:
        return 0
    ys, xs = zip(*max(found, key=len), strict=True)
    return max(max(ys) - min(ys), max(xs) - min(xs)) + 1


def cloned(image: Image.Image, box: tuple[int, int, int, int]) -> bool:
    """A blob mostly (over half its pixels) outside the kept picture's box: an object the new area
    holds of its own. The kept object lies inside the box; a clone grows from the box's edge."""
    left, top, right, bottom = box

    def outside(y: int, x: int) -> bool:
        return not (left <= x < right and top <= y < bottom)

    return any(sum(outside(y, x) for y, x in blob) > len(blob) / 2 for blob in blobs(image))


def save_sheet(images: list[Image.Image], folder: str, title: str) -> None:
    """The edit's pictures in one row, for a look at what the counts count."""
    w, h = images[0].size
    sheet = Image.new("RGB", (len(images) * (w + 2), h), "gray")
    for i, image in enumerate(images):
        sheet.paste(image, (i * (w + 2), 0))
    os.makedirs(folder, exist_ok=True)
    name = "".join(c if c.isalnum() or c in ".-" else "_" for c in title)
    sheet.save(os.path.join(folder, f"{name}.png"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=24, help="seeds per prompt")
    parser.add_argument("--strengths", default="1", help="how far the new area is re-noised, e.g. 1,0.9")
    parser.add_argument("--zooms", default="2", help="Zoom Out factors, e.g. 2,1.5")
    parser.add_argument("--save", default=None, help="a folder: one sheet of pictures per edit, strength and prompt")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from diffusers import AutoPipelineForInpainting, AutoPipelineForText2Image

    from engine.core import TINY_MODEL, WEIGHTS_DIR

    pipe = AutoPipelineForText2Image.from_pretrained(str(WEIGHTS_DIR / TINY_MODEL), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    inpaint = AutoPipelineForInpainting.from_pipe(pipe)
    inpaint.set_progress_bar_config(disable=True)
    strengths = [float(s) for s in args.strengths.split(",")]
    zooms = {f"Zoom Out {z:g}x": z for z in (float(z) for z in args.zooms.split(","))}
    edits = {name: canvas.zoom_out(64, 64, z) for name, z in zooms.items()}
    edits["Pan ➡"] = canvas.pan(64, 64, canvas.Direction.RIGHT, canvas.pan_step(64), 4096)
    started = time.perf_counter()
    clones = {(name, s): 0 for name in edits for s in strengths}
    unasked = dict.fromkeys(edits, 0)
    by_kept = {(name, s, small): [0, 0] for name in zooms for s in strengths for small in (True, False)}
    total = 0

    def generators(seeds: list[int]) -> list[torch.Generator]:
        return [torch.Generator("cpu").manual_seed(seed) for seed in seeds]

    for prompt in PROMPTS:  # one batched call per prompt and step, as the engine batches
        seeds = [tile_seeds(1000 + n)[0] for n in range(args.seeds)]
        tiles = pipe(
            [prompt] * len(seeds), height=64, width=64, num_inference_steps=STEPS, guidance_scale=SHIPPED_GUIDANCE,
            generator=generators(seeds),
        ).images  # fmt: skip
        total += len(seeds)
        sizes = [object_size(tile) for tile in tiles]
        again = [seed + 1 for seed in seeds]
        seconds: dict[tuple[int, int], int] = {}  # a plain /imagine's second objects, per canvas size
        for name, plan in edits.items():
            if (plan.width, plan.height) not in seconds:
                plain = pipe(
                    [prompt] * len(seeds), height=plan.height, width=plan.width, num_inference_steps=STEPS,
                    guidance_scale=SHIPPED_GUIDANCE, generator=generators(again),
                ).images  # fmt: skip
                seconds[plan.width, plan.height] = sum(len(blobs(image)) >= 2 for image in plain)
            unasked[name] += seconds[plan.width, plan.height]
            for strength in strengths:
                requests = []
                for tile, seed in zip(tiles, again, strict=True):
                    picture, mask = canvas.place(tile, plan)
                    requests.append(
                        RenderRequest(
                            action=Action.OUTPAINT,
                            prompt=prompt,
                            seeds=(seed,),
                            width=plan.width,
                            height=plan.height,
                            steps=STEPS,
                            guidance_scale=SHIPPED_GUIDANCE,
                            init_image=picture,
                            mask_image=mask,
                            strength=strength,
                        )  # fmt: skip
                    )
                drawn = outpaint_action.outpaint(inpaint, requests)
                if args.save:
                    save_sheet([image for [image] in drawn], args.save, f"{name} {strength:g} {prompt}")
                clones[name, strength] += sum(cloned(image, plan.box) for [image] in drawn)
                if name in zooms:
                    for size, [image] in zip(sizes, drawn, strict=True):
                        tally = by_kept[name, strength, size / zooms[name] < SMALL_KEPT]
                        tally[0] += cloned(image, plan.box)
                        tally[1] += 1
    elapsed = time.perf_counter() - started
    print(f"dreamgrid-tiny, {len(PROMPTS)} prompts × {args.seeds} seeds, {STEPS} steps ({elapsed:.0f} s)")
    print(f"  {'edit':<14} {'new area re-noised':>19} {'clone':>7} {'unasked (plain /imagine)':>25}")
    for name in edits:
        for strength in strengths:
            rate = clones[name, strength] / total
            print(f"  {name:<14} {strength:>19g} {rate:>7.0%} {unasked[name] / total:>25.0%}")
    print(f"  Zoom Out clones by the kept object's size after the zoom (under / at least {SMALL_KEPT} px):")
    for (name, strength, small), (hits, count) in by_kept.items():
        if count:
            size = f"under {SMALL_KEPT} px" if small else f"{SMALL_KEPT} px or more"
            print(f"  {name:<14} {strength:>19g} {size:>14}: {hits}/{count} cloned ({hits / count:.0%})")


if __name__ == "__main__":
    main()
