"""Upscale (Subtle / Creative) next to a plain 2x Lanczos resize: sharper, and how faithful? Not a test.

    .venv/bin/python -m bench.upscale_bench [--tiles 8] [--sd15-tiles 2] [--strengths 0.1,0.2,0.3,0.35,0.45]

For each source tile, the same 2x Lanczos resize is the baseline and the engine's upscale action
(Lanczos, then image-to-image at each strength: "hires fix") runs beside it. Two figures per strength:

- **sharpness**: high-frequency energy (mean squared difference between the image and its
  Gaussian blur, radius 1 px) as a ratio to Lanczos's. Above 1: detail the resize could not make.
- **drift**: mean absolute difference (0–255) between the upscale, box-downsampled back to the
  source's size, and the source. Lanczos's own is shown for scale; a faithful upscale stays near it.

Models: the shipped `dreamgrid-tiny` (its own tiles as sources, 64 -> 128 px), and an SD1.5-shaped
pipeline built from config with random weights (the same tiles as sources, 64 -> 128 px). Random
weights cannot show quality; they show what a strength does to an SD1.5-shaped network's output.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageFilter  # noqa: E402

from engine import params  # noqa: E402
from engine.actions import upscale as upscale_action  # noqa: E402
from engine.requests import Action, RenderRequest  # noqa: E402

PROMPTS = (
    "a red circle on a blue background",
    "a yellow triangle on a green background",
    "a white square on a black background",
    "a purple star on an orange background",
)


def high_frequency(image: Image.Image) -> float:
    gray = image.convert("L")
    blurred = gray.filter(ImageFilter.GaussianBlur(1))
    return float(((np.asarray(gray, np.float64) - np.asarray(blurred, np.float64)) ** 2).mean())


def drift(upscaled: Image.Image, source: Image.Image) -> float:
    back = upscaled.convert("RGB").reduce(2)
    return float(np.abs(np.asarray(back, np.float64) - np.asarray(source.convert("RGB"), np.float64)).mean())


def lanczos(source: Image.Image) -> Image.Image:
    return source.resize((source.width * 2, source.height * 2), Image.Resampling.LANCZOS)


def sources(pipe: object, count: int, size: int, guidance: float) -> list[tuple[str, Image.Image]]:
    """`count` tiles drawn by `pipe` itself, with their prompts."""
    out = []
    for n in range(count):
        prompt = PROMPTS[n % len(PROMPTS)]
        image = pipe(  # type: ignore[operator]
            prompt,
            height=size,
            width=size,
            num_inference_steps=20,
            guidance_scale=guidance,
            generator=torch.Generator("cpu").manual_seed(n),
        ).images[0]
        out.append((prompt, image))
    return out


def measure(
    img2img: object,
    tiles: list[tuple[str, Image.Image]],
    strengths: list[float],
    steps: int,
    min_steps: int,
    guidance: float,
) -> None:
    base_hf = [high_frequency(lanczos(tile)) for _, tile in tiles]
    base_drift = np.mean([drift(lanczos(tile), tile) for _, tile in tiles])
    print(f"  {'':<22} {'sharpness vs Lanczos':>21} {'drift (0-255)':>14} {'steps run':>10} {'s/tile':>7}")
    print(f"  {'Lanczos 2x':<22} {1.0:>21.2f} {base_drift:>14.2f} {'-':>10} {'-':>7}")
    for strength in strengths:
        asked = params.img2img_steps(steps, strength, minimum=min_steps)
        ratios, drifts = [], []
        started = time.perf_counter()
        for (prompt, tile), hf in zip(tiles, base_hf, strict=True):
            request = RenderRequest(
                action=Action.UPSCALE,
                prompt=prompt,
                seeds=(7,),
                width=tile.width,
                height=tile.height,
                steps=asked,
                guidance_scale=guidance,
                init_image=tile,
                strength=strength,
            )
            [[image]] = upscale_action.upscale(img2img, [request])
            ratios.append(high_frequency(image) / hf)
            drifts.append(drift(image, tile))
        per_tile = (time.perf_counter() - started) / len(tiles)
        label = f"strength {strength:g}" + {
            params.UPSCALE_SUBTLE: " (Subtle)",
            params.UPSCALE_CREATIVE: " (Creative)",
        }.get(strength, "")
        run = int(asked * strength)
        print(f"  {label:<22} {np.median(ratios):>21.2f} {np.mean(drifts):>14.2f} {run:>10} {per_tile:>7.2f}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiles", type=int, default=8, help="source tiles on the shipped model")
    parser.add_argument("--sd15-tiles", type=int, default=2, help="source tiles on the SD1.5-shaped model (0: skip)")
    parser.add_argument("--strengths", default="0.1,0.2,0.3,0.35,0.45")
    parser.add_argument("--steps", type=int, default=params.BASE_STEPS)
    parser.add_argument(
        "--min-steps", type=int, default=params.UPSCALE_MIN_STEPS, help="steps an upscale runs at least"
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    strengths = sorted({float(s) for s in args.strengths.split(",")} | {params.UPSCALE_SUBTLE, params.UPSCALE_CREATIVE})

    from diffusers import AutoPipelineForImage2Image, AutoPipelineForText2Image

    from engine.core import TINY_MODEL, WEIGHTS_DIR

    shipped = AutoPipelineForText2Image.from_pretrained(str(WEIGHTS_DIR / TINY_MODEL), local_files_only=True)
    shipped.set_progress_bar_config(disable=True)
    tiles = sources(shipped, args.tiles, 64, params.SHIPPED_GUIDANCE)
    img2img = AutoPipelineForImage2Image.from_pipe(shipped)
    img2img.set_progress_bar_config(disable=True)
    print(
        f"shipped dreamgrid-tiny, {len(tiles)} tiles 64 -> 128 px, {args.steps} steps, at least {args.min_steps} run:"
    )
    measure(img2img, tiles, strengths, args.steps, args.min_steps, params.SHIPPED_GUIDANCE)

    if args.sd15_tiles:
        from bench.gpu_bench import build_sd15

        sd15 = build_sd15(torch.device("cpu"), torch.float32)
        sd15_img2img = AutoPipelineForImage2Image.from_pipe(sd15)
        sd15_img2img.set_progress_bar_config(disable=True)
        print(f"\nSD1.5-shaped, random weights, {args.sd15_tiles} tiles 64 -> 128 px, {args.steps} steps:")
        measure(sd15_img2img, tiles[: args.sd15_tiles], strengths, args.steps, args.min_steps, 7.5)


if __name__ == "__main__":
    main()
