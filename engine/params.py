"""Midjourney parameters -> diffusers arguments. Pure Python, no torch: the bot imports it.

| Midjourney           | range (default)      | diffusers / engine                                                 |
|----------------------|----------------------|--------------------------------------------------------------------|
| `--ar W:H`           | whole numbers (1:1)  | `width, height = size_for_aspect(W, H, native², native // 8)`     |
| `--seed N`           | 0–4294967295 (rand.) | one CPU `torch.Generator` per tile; the CLI uses N + i for tile i  |
| `--q Q`              | .25/.5/1/2 (1)       | `num_inference_steps = round(20 · Q)` → 5 / 10 / 20 / 40           |
| `--s S` (stylize)    | 0–1000 (100)         | `guidance_scale` 12 at 0 → 7.5 at 100 → 3 at 1000 (piecewise lin.) |
| `--chaos C`          | 0–100 (0)            | per-tile coarse noise on the start latents + prompt-embedding noise |
| `--stop P`           | 10–100 (100)         | interrupt after `max(1, steps·P//100)` steps; decode the x₀ guess  |
| `--tile`             | flag                 | circular padding in every UNet/VAE conv for that render            |
| `--no a, b`          | text                 | `negative_prompt`                                                  |
| Vary Strong / Subtle | —                    | img2img `strength` 0.75 / 0.4                                      |
| Upscale Subtle/Creat.| —                    | 2x Lanczos, then img2img `strength` 0.1 / 0.2 ("hires fix")        |
| Zoom / Pan / Square  | —                    | inpainting pipeline (`from_pipe`) on a larger canvas, strength 1   |
| Vary (Region)        | —                    | inpainting pipeline on the chosen cells, `strength` 1              |

Stylize: higher values mean "more artistic, less literal" in Midjourney, which is lower classifier-free
guidance. Chaos: a tile with chaos C gets a 2x2 random field, upsampled, added to its starting noise
(amplitude 1.5·C/100, then renormalised to unit variance), which moves composition and colour layout, and
Gaussian noise of C/100 · std on its prompt embedding. Both are seeded by the tile's seed, so chaos is
reproducible and batch-compatible. In img2img (variation, upscale) only the embedding noise applies.
"""

from __future__ import annotations

import math

SEED_MIN, SEED_MAX = 0, 4_294_967_295
CHAOS_MIN, CHAOS_MAX, CHAOS_DEFAULT = 0, 100, 0
STYLIZE_MIN, STYLIZE_MAX, STYLIZE_DEFAULT = 0, 1000, 100
STOP_MIN, STOP_MAX, STOP_DEFAULT = 10, 100, 100
QUALITY_VALUES = (0.25, 0.5, 1.0, 2.0)
QUALITY_DEFAULT = 1.0
BASE_STEPS = 20  # steps at --q 1
MAX_STEPS = 150

# img2img strengths (0 keeps the source, 1 ignores it). Measured on the tiny model: mean abs pixel
# change from the source tile is clearly smaller at Subtle than at Strong (tests/engine/test_actions.py).
VARY_STRONG = 0.75
VARY_SUBTLE = 0.4
# Measured on the shipped model: at 2x it works outside the size it was trained at, and from 0.2 up
# it redraws the subject smaller; 0.1 keeps the picture (mean abs change 11/255 vs 23 to another tile).
UPSCALE_SUBTLE = 0.1  # sharpens, keeps the picture, like Midjourney's Upscale (Subtle)
UPSCALE_CREATIVE = 0.2  # redraws detail and may drift from the source
VARY_REGION = 1.0  # Vary (Region) redraws the chosen cells from scratch, as Midjourney's does

# Guidance at the knots of the stylize mapping.
_STYLIZE_KNOTS = ((0, 12.0), (100, 7.5), (1000, 3.0))


def size_for_aspect(w: int, h: int, budget_pixels: int, multiple: int = 64) -> tuple[int, int]:
    """(width, height) with aspect ~w:h, area ~budget_pixels, both multiples of `multiple`.

    `size_for_aspect(3, 2, 512 * 512)` -> (640, 448); each side is at least `multiple`.
    """
    checks = (("aspect width", w), ("aspect height", h), ("budget_pixels", budget_pixels), ("multiple", multiple))
    for name, value in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    width = math.sqrt(budget_pixels * w / h)
    height = math.sqrt(budget_pixels * h / w)
    return max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple)


def steps_for_quality(q: float, base: int = BASE_STEPS) -> int:
    if q not in QUALITY_VALUES:
        raise ValueError(f"--q must be one of {', '.join(f'{v:g}' for v in QUALITY_VALUES)}, got {q:g}")
    return max(1, round(base * q))


def guidance_for_stylize(s: int | float) -> float:
    if not STYLIZE_MIN <= s <= STYLIZE_MAX:
        raise ValueError(f"--stylize must be between {STYLIZE_MIN} and {STYLIZE_MAX}, got {s:g}")
    for (s0, g0), (s1, g1) in zip(_STYLIZE_KNOTS, _STYLIZE_KNOTS[1:], strict=False):
        if s <= s1:
            return round(g0 + (g1 - g0) * (s - s0) / (s1 - s0), 3)
    raise AssertionError("unreachable")


def img2img_steps(steps: int, strength: float, minimum: int = 2) -> int:
    """Steps to ask for so that image-to-image at `strength` runs at least `minimum` of them.

    diffusers runs int(steps * strength) steps: 5 steps (--q .25) at Upscale (Subtle)'s 0.1 would
    run none.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    needed = steps
    while int(needed * strength) < minimum:
        needed += 1
    return needed


def steps_for_stop(steps: int, stop: int) -> int:
    """How many denoising steps `--stop` lets run (matches FakeEngine)."""
    if not STOP_MIN <= stop <= STOP_MAX:
        raise ValueError(f"--stop must be between {STOP_MIN} and {STOP_MAX}, got {stop}")
    return max(1, steps * stop // 100)


def parse_aspect(text: str) -> tuple[int, int]:
    """'3:2' -> (3, 2); whole numbers only, as in Midjourney."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--ar must look like 3:2 with whole numbers, got {text!r}")
    return int(parts[0]), int(parts[1])
