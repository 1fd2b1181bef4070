"""Midjourney parameters -> diffusers arguments. Pure Python, no torch: the bot imports it.

`PARAMETERS` is the one table of prompt parameters: name, aliases, values, default and how each
reaches diffusers. The bot's prompt parser takes names, ranges and examples from it, `/help` and
the engine CLI's help are written from it, and a test checks the README's table against it.

Image-to-image strengths: Vary Strong / Subtle use img2img `strength` 0.75 / 0.4; Upscale Subtle /
Creative is 2x Lanczos, then img2img `strength` 0.1 / 0.2 ("hires fix"). An image prompt's `--iw W`
is IP-Adapter scale 0.5·W, or without an adapter img2img `strength` 1 − 0.25·W.

Stylize: higher values mean "more artistic, less literal" in Midjourney, which is lower classifier-free
guidance. Chaos: a tile with chaos C gets a 2x2 random field, upsampled, added to its starting noise
(amplitude 1.5·C/100, then renormalised to unit variance), which moves composition and colour layout, and
Gaussian noise of C/100 · std on its prompt embedding. Both are seeded by the tile's seed, so chaos is
reproducible and batch-compatible. In img2img (variation, upscale) only the embedding noise applies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

SEED_MIN, SEED_MAX = 0, 4_294_967_295
CHAOS_MIN, CHAOS_MAX, CHAOS_DEFAULT = 0, 100, 0
STYLIZE_MIN, STYLIZE_MAX, STYLIZE_DEFAULT = 0, 1000, 100
STOP_MIN, STOP_MAX, STOP_DEFAULT = 10, 100, 100
QUALITY_VALUES = (0.25, 0.5, 1.0, 2.0)
QUALITY_DEFAULT = 1.0
# --iw: how strongly an image prompt steers the result (Midjourney's range and default).
IMAGE_WEIGHT_MIN, IMAGE_WEIGHT_MAX, IMAGE_WEIGHT_DEFAULT = 0.0, 3.0, 1.0


ASPECT_MAX = 4  # an aspect ratio lies between 1:ASPECT_MAX and ASPECT_MAX:1
REPEAT_MIN, REPEAT_MAX = 1, 40
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


@dataclass(frozen=True, slots=True)
class PromptParameter:
    name: str  # without the dashes, lower case
    aliases: tuple[str, ...]
    usage: str  # e.g. "--ar W:H"
    values: str  # what it accepts, for people
    default: str  # what a job gets when neither the prompt nor /settings sets it
    example: str  # a value that works, for "needs a value, e.g. …"
    engine: str  # how it reaches diffusers
    bounds: tuple[int, int] | None = None  # a whole number's range, checked by the parser


PARAMETERS: tuple[PromptParameter, ...] = (
    PromptParameter(
        "ar", ("aspect",), "--ar W:H", f"whole numbers, from 1:{ASPECT_MAX} to {ASPECT_MAX}:1", "1:1", "3:2",
        "`width, height = size_for_aspect(W, H, native², native // 8)`",
    ),
    PromptParameter(
        "seed", (), "--seed N", f"{SEED_MIN}–{SEED_MAX}", "random", "42",
        "one CPU `torch.Generator` per tile; tile i uses N + i", bounds=(SEED_MIN, SEED_MAX),
    ),
    PromptParameter(
        "no", (), "--no a, b", "what to leave out: a comma list, up to the next parameter", "nothing",
        "text, people", "`negative_prompt`",
    ),
    PromptParameter(
        "chaos", ("c",), "--chaos N", f"{CHAOS_MIN}–{CHAOS_MAX}", str(CHAOS_DEFAULT), "20",
        "per-tile coarse noise on the start latents + prompt-embedding noise", bounds=(CHAOS_MIN, CHAOS_MAX),
    ),
    PromptParameter(
        "stylize", ("s",), "--stylize N", f"{STYLIZE_MIN}–{STYLIZE_MAX}", str(STYLIZE_DEFAULT), "250",
        "`guidance_scale` 12 at 0 → 7.5 at 100 → 3 at 1000 (piecewise linear)", bounds=(STYLIZE_MIN, STYLIZE_MAX),
    ),
    PromptParameter(
        "quality", ("q",), "--quality Q", ".25, .5, 1 or 2 (`0.5` works too)", f"{QUALITY_DEFAULT:g}", ".5",
        f"`num_inference_steps = round({BASE_STEPS} · Q)` → 5 / 10 / 20 / 40",
    ),
    PromptParameter(
        "stop", (), "--stop N", f"{STOP_MIN}–{STOP_MAX}: the percent of the steps to run", str(STOP_DEFAULT), "80",
        "interrupt after `max(1, steps·N//100)` steps; decode the x₀ guess", bounds=(STOP_MIN, STOP_MAX),
    ),
    PromptParameter(
        "tile", (), "--tile", "a flag: tiles that repeat seamlessly", "off", "",
        "circular padding in every UNet/VAE conv for that render",
    ),
    PromptParameter(
        "repeat", ("r",), "--repeat N", f"{REPEAT_MIN}–{REPEAT_MAX}: run the job N times", str(REPEAT_MIN), "4",
        "N separate jobs, each with its own seeds", bounds=(REPEAT_MIN, REPEAT_MAX),
    ),
    PromptParameter(
        "model", (), "--model NAME", "one of the server's models", "server's default", "NAME",
        "the pipeline loaded for that model",
    ),
    PromptParameter(
        "iw", (), "--iw W", f"{IMAGE_WEIGHT_MIN:g}–{IMAGE_WEIGHT_MAX:g}: how strongly an image prompt steers",
        f"{IMAGE_WEIGHT_DEFAULT:g}", "2", "IP-Adapter scale 0.5·W; without one, img2img `strength` 1 − 0.25·W",
    ),
)  # fmt: skip
PARAMETER_BY_SPELLING = {spelling: p for p in PARAMETERS for spelling in (p.name, *p.aliases)}

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


def tile_size(w: int, h: int, native: int) -> tuple[int, int]:
    """The tile size for `--ar w:h` on a model trained at `native` px: its area, sides in steps of native/8."""
    return size_for_aspect(w, h, native * native, max(8, native // 8))


def aspect_buckets(native: int, max_aspect: int = ASPECT_MAX) -> list[tuple[int, int]]:
    """Every tile size a member can get from `--ar` (whole numbers up to max_aspect:1), squarest first.

    Many ratios round to one size, so a model has a few dozen at most: the shapes a compiled UNet
    is warmed up for (engine/optimize.py).
    """
    sizes = {
        tile_size(w, h, native)
        for w in range(1, 16 * max_aspect + 1)
        for h in range(1, 16 * max_aspect + 1)
        if w <= max_aspect * h and h <= max_aspect * w
    }
    return sorted(sizes, key=lambda s: (max(s) / min(s), -s[0]))


def quality_text(q: float) -> str:
    """How Midjourney writes a quality: .25, .5, 1, 2."""
    return f"{q:g}".removeprefix("0")


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


def _check_image_weight(iw: float) -> None:
    if not IMAGE_WEIGHT_MIN <= iw <= IMAGE_WEIGHT_MAX:
        raise ValueError(f"--iw must be between {IMAGE_WEIGHT_MIN:g} and {IMAGE_WEIGHT_MAX:g}, got {iw:g}")


def ip_adapter_scale(iw: float) -> float:
    """IP-Adapter's scale for `--iw`: 0.5 at the default 1 (the balance diffusers' docs suggest), 1.5 at 3."""
    _check_image_weight(iw)
    return 0.5 * iw


def image_prompt_strength(iw: float) -> float:
    """Image-to-image strength for `--iw` when no IP-Adapter is installed.

    1 at --iw 0 (the picture is all noise: text alone), 0.75 at the default 1 (Vary Strong: the
    picture's layout and colours, redrawn), 0.25 at 3 (close to the picture).
    """
    _check_image_weight(iw)
    return 1.0 - 0.25 * iw
