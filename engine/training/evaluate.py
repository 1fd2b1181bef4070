"""`dreamgrid eval`: does the model draw what the prompt names?

Held-out prompts (scenes whose shape/foreground/background triple was never trained on)
are rendered at the engine's defaults and judged from the pixels alone: background colour
from the border, foreground colour from the pixels that differ most from it, and the shape
by which ideal outline best overlaps the foreground mask.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..params import SHIPPED_GUIDANCE
from .dataset import COLOURS, SHAPES, Scene, caption, draw_shape, held_out_combos, random_scene, trained_sample_combos

PALETTE_NAMES = list(COLOURS)
PALETTE = np.array([COLOURS[n] for n in PALETTE_NAMES], dtype=np.float32)

# What the shipped model is drawn at: 64 px tiles, 20 steps, engine.params.SHIPPED_GUIDANCE (4; the
# scheduler is saved in the folder).
DEFAULT_SIZE = 64
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = SHIPPED_GUIDANCE


@dataclass(frozen=True)
class Judgement:
    bg: str
    fg: str | None
    shape: str | None


def nearest_colour(rgb: np.ndarray) -> str:
    return PALETTE_NAMES[int(np.argmin(((PALETTE - rgb) ** 2).sum(axis=1)))]


def _shape_masks(h: int, w: int) -> dict[str, np.ndarray]:
    """Each shape drawn as the training set draws it (`draw_shape`), filling an h x w box."""
    scale = 4
    masks = {}
    for shape in SHAPES:
        canvas = Image.new("L", (w * scale, h * scale), 0)
        draw_shape(ImageDraw.Draw(canvas), shape, (0, 0, w * scale, h * scale), 255, 0)
        masks[shape] = np.asarray(canvas.resize((w, h), Image.Resampling.BOX)) >= 128
    return masks


def classify(image: Image.Image) -> Judgement:
    px = np.asarray(image.convert("RGB"), dtype=np.float32)
    h, w, _ = px.shape
    ring = max(2, h // 32)
    border = np.concatenate(
        [px[:ring].reshape(-1, 3), px[-ring:].reshape(-1, 3), px[:, :ring].reshape(-1, 3), px[:, -ring:].reshape(-1, 3)]
    )
    bg_rgb = np.median(border, axis=0)
    bg = nearest_colour(bg_rgb)
    dist = np.sqrt(((px - bg_rgb) ** 2).sum(axis=2))
    peak = np.percentile(dist, 99)
    if peak < 40:
        return Judgement(bg, None, None)
    mask = dist > peak / 2
    if mask.sum() < 12:
        return Judgement(bg, None, None)
    fg = nearest_colour(np.median(px[dist > peak * 0.75], axis=0))
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    box = mask[y0:y1, x0:x1]
    best, best_iou = None, -1.0
    for name, ideal in _shape_masks(y1 - y0, x1 - x0).items():
        iou = (box & ideal).sum() / max(1, (box | ideal).sum())
        if iou > best_iou:
            best, best_iou = name, iou
    return Judgement(bg, fg, best)


@dataclass(frozen=True)
class Case:
    prompt: str
    seed: int
    scene: Scene


def colour_shares(image: Image.Image, palettes: list[tuple[str, ...]]) -> list[float]:
    """Per palette (named colours, e.g. one blended picture's foreground and background): the share
    of the image's pixels whose nearest of all the palettes' colours is one of its own."""
    names = [name for palette in palettes for name in palette]
    owner = np.array([i for i, palette in enumerate(palettes) for _ in palette])
    rgb = np.array([COLOURS[name] for name in names], dtype=np.float32)
    px = np.asarray(image.convert("RGB"), dtype=np.float32).reshape(-1, 1, 3)
    nearest = ((px - rgb[None]) ** 2).sum(-1).argmin(1)
    return [float((owner[nearest] == i).mean()) for i in range(len(palettes))]


def eval_cases(
    seeds_per_prompt: int = 4, combos: list[tuple[str, str, str]] | None = None, first_seed: int = 1000
) -> list[Case]:
    """Held-out (or `combos`') prompt x seed cases, the same on every machine."""
    combos = combos if combos is not None else held_out_combos()
    rng = random.Random("dreamgrid-eval")
    cases: list[Case] = []
    for combo in combos:
        for k in range(seeds_per_prompt):
            scene = random_scene(rng, [combo])
            cases.append(Case(caption(scene, rng), first_seed + 17 * len(cases) + k, scene))
    return cases


# What `dreamgrid eval --cases` judges: the held-out prompts; the same prompts at other seeds (is a
# score luck of the seeds?); prompts of a balanced sample of trained triples (what the model saw).
CASE_SETS = ("held-out", "fresh-seeds", "trained")


def case_set(name: str, seeds_per_prompt: int = 4) -> list[Case]:
    if name == "held-out":
        return eval_cases(seeds_per_prompt)
    if name == "fresh-seeds":
        return eval_cases(seeds_per_prompt, first_seed=100_000)
    if name == "trained":
        return eval_cases(seeds_per_prompt, trained_sample_combos())
    raise ValueError(f"cases must be one of {', '.join(CASE_SETS)}, got {name!r}")


def names_background(case: Case) -> bool:
    """Whether the case asks for a background. One phrasing ("green circle at the bottom") names
    none, and whatever background the model draws for it is what was asked. A case with no prompt
    is a picture judged against its own scene (a reconstruction), background and all."""
    return not case.prompt or case.scene.bg in case.prompt.replace(",", " ").split()


def score(cases: list[Case], images: list[Image.Image]) -> dict[str, float]:
    """Shares of the cases whose picture shows the asked foreground colour and shape, and of those
    that ask for a background (`names_background`) whose picture shows it."""
    hits = {"background": 0, "foreground": 0, "shape": 0}
    asked_background = 0
    for case, image in zip(cases, images, strict=True):
        j = classify(image)
        if names_background(case):
            asked_background += 1
            hits["background"] += j.bg == case.scene.bg
        hits["foreground"] += j.fg == case.scene.fg
        hits["shape"] += j.shape == case.scene.shape
    return {
        "background": hits["background"] / max(1, asked_background),
        "foreground": hits["foreground"] / len(cases),
        "shape": hits["shape"] / len(cases),
    }


CHANCE = {"background": 1 / len(COLOURS), "foreground": 1 / (len(COLOURS) - 1), "shape": 1 / len(SHAPES)}
# What `dreamgrid eval` holds a model to, per case set: the shipped model's bar since issue #24
# (colours >= 95 %, shape >= 90 % on held-out triples and >= 95 % on trained ones). The first
# model's bar was 85 / 75 / 60 %, which a model drawing squares for stars would pass.
HELD_OUT_TARGETS = {"background": 0.95, "foreground": 0.95, "shape": 0.90}
TARGETS = {
    "held-out": HELD_OUT_TARGETS,
    "fresh-seeds": HELD_OUT_TARGETS,
    "trained": {**HELD_OUT_TARGETS, "shape": 0.95},
}


def generate(pipe, cases: list[Case], steps: int, guidance: float, size: int, batch: int = 16) -> list[Image.Image]:
    import torch

    images: list[Image.Image] = []
    for i in range(0, len(cases), batch):
        chunk = cases[i : i + batch]
        out = pipe(
            prompt=[c.prompt for c in chunk],
            height=size,
            width=size,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=[torch.Generator("cpu").manual_seed(c.seed) for c in chunk],
        )
        images.extend(out.images)
    return images


def load_pipeline(folder: str):
    import diffusers
    import transformers
    from diffusers import StableDiffusionPipeline

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    pipe = StableDiffusionPipeline.from_pretrained(
        folder, safety_checker=None, feature_extractor=None, requires_safety_checker=False
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def evaluate(
    folder: str,
    seeds_per_prompt: int = 4,
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    size: int = DEFAULT_SIZE,
    grid_path: str | None = None,
    cases_name: str = "held-out",
) -> dict[str, float]:
    pipe = load_pipeline(folder)
    cases = case_set(cases_name, seeds_per_prompt)
    start = time.perf_counter()
    images = generate(pipe, cases, steps, guidance, size)
    result = score(cases, images)
    result["cases"] = len(cases)
    result["cases_naming_background"] = sum(map(names_background, cases))
    result["seconds"] = time.perf_counter() - start
    if grid_path:
        save_grid(images[:64], grid_path)
    return result


def save_grid(images: list[Image.Image], path: str, columns: int = 8) -> None:
    w, h = images[0].size
    rows = (len(images) + columns - 1) // columns
    grid = Image.new("RGB", (columns * w, rows * h), "gray")
    for i, im in enumerate(images):
        grid.paste(im, ((i % columns) * w, (i // columns) * h))
    grid.save(path)
