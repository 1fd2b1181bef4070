"""Style codes: `--sref random` draws one, and a code names the same style forever. Pure Python, no torch.

A code is the seed of a small palette picture: three to five colours, each a band of its own
width, with a random lightness and saturation per code. The style path (engine/actions/style.py)
reads only a reference's colour and contrast statistics, never its layout, so the palette's bands
say nothing about where things go; `palette(code)` is drawn by Python's `random.Random`, whose
sequence for a seed is fixed across platforms and versions, so the same code gives the same style.
"""

from __future__ import annotations

import colorsys
import random

from PIL import Image, ImageDraw

from engine.params import STYLE_CODE_MAX, STYLE_CODE_MIN

PALETTE_SIZE = 64  # pixels per side: the statistics need no more
_RANDOM_CODES = random.SystemRandom()


def random_code() -> int:
    """A fresh style code, as `--sref random` draws it."""
    return _RANDOM_CODES.randint(STYLE_CODE_MIN, STYLE_CODE_MAX)


def palette(code: int, size: int = PALETTE_SIZE) -> Image.Image:
    """The style a code names, as a picture of coloured bands (the same pixels for the same code)."""
    if not STYLE_CODE_MIN <= code <= STYLE_CODE_MAX:
        raise ValueError(f"a style code is {STYLE_CODE_MIN}–{STYLE_CODE_MAX}, got {code}")
    rng = random.Random(code)
    base_hue = rng.random()
    spread = rng.choice((0.05, 0.12, 0.33, 0.5))  # analogous to complementary palettes
    saturation = rng.uniform(0.25, 1.0)
    lightness = rng.uniform(0.2, 0.8)
    count = rng.randint(3, 5)
    widths = [rng.uniform(0.5, 2.0) for _ in range(count)]
    image = Image.new("RGB", (size, size))
    draw = ImageDraw.Draw(image)
    top = 0.0
    for k, width in enumerate(widths):
        hue = (base_hue + spread * (k - count / 2) / count + rng.uniform(-0.03, 0.03)) % 1.0
        light = min(0.95, max(0.05, lightness + rng.uniform(-0.25, 0.25)))
        sat = min(1.0, max(0.0, saturation + rng.uniform(-0.2, 0.2)))
        red, green, blue = colorsys.hls_to_rgb(hue, light, sat)
        bottom = top + size * width / sum(widths)
        draw.rectangle(
            (0, round(top), size, round(bottom)), fill=(round(red * 255), round(green * 255), round(blue * 255))
        )
        top = bottom
    return image
