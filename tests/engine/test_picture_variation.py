"""A member's picture redrawn with no prompt keeps the picture when drawn from its description (issue #24)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from engine import params
from engine.requests import Action, DescribeRequest, RenderRequest

pytestmark = pytest.mark.slow


def red_circle_on_blue() -> Image.Image:
    picture = Image.new("RGB", (64, 64), (30, 60, 200))
    ImageDraw.Draw(picture).ellipse((16, 16, 48, 48), fill=(220, 30, 30))
    return picture


async def test_a_promptless_variation_from_the_description_resembles_the_picture():
    from engine.core import DiffusersEngine

    source = red_circle_on_blue()
    pixels = np.asarray(source, dtype=float)
    strength = params.VARY_STRONG
    async with DiffusersEngine(model="dreamgrid-tiny", batch_window_s=0.0) as engine:
        described = (await engine.describe(DescribeRequest(image=source, count=1))).prompts[0]
        assert "red" in described and "circle" in described and "blue" in described

        async def vary(prompt: str) -> list[np.ndarray]:
            request = RenderRequest(
                action=Action.VARIATION,
                prompt=prompt,
                seeds=(5, 6, 7, 8),
                width=64,
                height=64,
                steps=params.img2img_steps(20, strength),
                strength=strength,
                init_image=source,
            )
            return [np.asarray(image, dtype=float) for image in (await engine.render(request)).images]

        blind, seen = await vary(""), await vary(described)
    drift = [float(np.abs(tile - pixels).mean()) for tile in seen]
    blind_drift = [float(np.abs(tile - pixels).mean()) for tile in blind]
    assert np.mean(drift) < 0.75 * np.mean(blind_drift)  # measured: 28 against 54 (/255)

    def red_of(image: np.ndarray) -> np.ndarray:
        return (image[..., 0] > 150) & (image[..., 0] > 2 * image[..., 2])

    centred = 0
    for tile in seen:
        red = red_of(tile)
        corner = tile[:6, :6].reshape(-1, 3).mean(axis=0)
        assert red.sum() > 0.25 * red_of(pixels).sum(), red.sum()  # a red object is still there
        assert corner[2] > 150 and corner[2] > 2 * corner[0], corner  # on blue
        centred += bool(red[28:36, 28:36].mean() > 0.5)
    # Vary (Strong) may move it, as Midjourney's does, but mostly keeps it where it was
    # (measured: 3 of 4 tiles keep it in the middle, one draws it smaller on the left)
    assert centred >= 3, centred
