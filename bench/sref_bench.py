"""`--sref` on the shipped model: do colours move toward the reference, and does its layout stay out? Not a test.

    .venv/bin/python -m bench.sref_bench [--seeds 8] [--weights 0,50,100,250,500,1000] [--steps 20]

For each prompt and seed, the same grid tile is drawn without a style and with a style reference at
each `--sw`. The references are pictures whose colours and layout differ from what the prompts draw
(a two-colour split in the other corner's colours, and style codes: seeded palettes). Two figures:

- **colour distance**: the mean distance in RGB (0–441) between the tile's colour histogram's mean and
  spread and the reference's: `|μ_tile − μ_ref| + |σ_tile − σ_ref|` summed over channels, as a
  ratio to the unstyled tile's. Below 1: the style moved the colours toward the reference.
- **layout**: the foreground mask (pixels far from the tile's own border colour) of the styled tile,
  its IoU with the unstyled tile's mask (1: the same composition) and with the reference's mask
  (what copying the reference's layout would score high on).

The shipped model may be retrained (its prompts are shapes on backgrounds); the bench reads whatever
`engine/weights/dreamgrid-tiny` holds now, so run it again after a retrain.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from engine import style  # noqa: E402
from engine.actions.imagine import imagine  # noqa: E402
from engine.params import SHIPPED_GUIDANCE  # noqa: E402
from engine.requests import Action, RenderRequest  # noqa: E402
from engine.training.cli import SHIPPED_FOLDER  # noqa: E402

PROMPTS = (
    "a red circle on a blue background",
    "a yellow triangle on a green background",
    "a white square on a black background",
    "a purple star on an orange background",
)
SIZE = 64


def split_reference(top: tuple[int, int, int], bottom: tuple[int, int, int]) -> Image.Image:
    """A picture with a layout none of the prompts draw: a diagonal split of two colours."""
    image = Image.new("RGB", (SIZE, SIZE), bottom)
    ImageDraw.Draw(image).polygon([(0, 0), (SIZE, 0), (0, SIZE)], fill=top)
    return image


REFERENCES = {
    "pink/teal split": split_reference((240, 120, 190), (20, 140, 140)),
    "dark brown/cream split": split_reference((70, 40, 20), (240, 225, 190)),
    "style code 7": style.palette(7),
    "style code 123456": style.palette(123456),
}


def colour_stats(image: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    pixels = np.asarray(image.convert("RGB"), np.float64).reshape(-1, 3)
    return pixels.mean(0), pixels.std(0)


def colour_distance(image: Image.Image, reference: Image.Image) -> float:
    (m1, s1), (m2, s2) = colour_stats(image), colour_stats(reference)
    return float(np.abs(m1 - m2).sum() + np.abs(s1 - s2).sum())


def foreground(image: Image.Image) -> np.ndarray:
    """Pixels whose colour is far from the image's border colour (its background)."""
    pixels = np.asarray(image.convert("RGB"), np.float64)
    border = np.concatenate([pixels[0], pixels[-1], pixels[:, 0], pixels[:, -1]])
    background = np.median(border, axis=0)
    distance = np.linalg.norm(pixels - background, axis=2)
    return distance > max(40.0, float(np.percentile(distance, 50)))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def render(pipe: object, prompt: str, seed: int, steps: int, reference: Image.Image | None, weight: int) -> Image.Image:
    request = RenderRequest(
        action=Action.IMAGINE,
        prompt=prompt,
        seeds=(seed,),
        width=SIZE,
        height=SIZE,
        steps=steps,
        guidance_scale=SHIPPED_GUIDANCE,
        style_images=(reference,) if reference is not None else (),
        style_weight=weight,
    )
    return imagine(pipe, [request])[0][0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--weights", default="0,50,100,250,500,1000")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    from diffusers import AutoPipelineForText2Image

    pipe = AutoPipelineForText2Image.from_pretrained(str(SHIPPED_FOLDER), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    weights = [int(w) for w in args.weights.split(",")]
    started = time.perf_counter()
    plain = {
        (prompt, seed): render(pipe, prompt, seed, args.steps, None, 0)
        for prompt in PROMPTS
        for seed in range(args.seeds)
    }
    print(f"shipped dreamgrid-tiny, {len(PROMPTS)} prompts × {args.seeds} seeds, {args.steps} steps, {SIZE} px")
    header = (
        f"  {'reference':<24} {'--sw':>5} {'colour dist. vs none':>21} {'IoU with unstyled':>18} {'IoU with ref':>13}"
    )
    for name, reference in REFERENCES.items():
        print(header)
        ref_mask = foreground(reference)
        for weight in weights:
            ratios, keeps, copies = [], [], []
            for (prompt, seed), base in plain.items():
                styled = render(pipe, prompt, seed, args.steps, reference, weight)
                ratios.append(colour_distance(styled, reference) / max(1e-6, colour_distance(base, reference)))
                keeps.append(iou(foreground(styled), foreground(base)))
                copies.append(iou(foreground(styled), ref_mask))
            base_copy = np.mean([iou(foreground(base), ref_mask) for base in plain.values()])
            print(
                f"  {name:<24} {weight:>5} {np.mean(ratios):>21.2f} {np.mean(keeps):>18.2f}"
                f" {np.mean(copies):>8.2f} (unstyled {base_copy:.2f})"
            )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
