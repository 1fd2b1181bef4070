"""Grids: four tiles in, one 2x2 image out, and back."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.grid import compose_grid, split_grid


def tiles(size=(48, 32)):
    return [Image.new("RGB", size, colour) for colour in ("red", "green", "blue", "white")]


def test_a_grid_is_two_by_two_and_splits_back_into_its_tiles():
    grid = compose_grid(tiles())
    assert grid.size == (96, 64)
    assert grid.getpixel((0, 0)) == (255, 0, 0) and grid.getpixel((95, 63)) == (255, 255, 255)
    assert [t.tobytes() for t in split_grid(grid)] == [t.tobytes() for t in tiles()]


def test_a_single_image_is_not_a_grid():
    (one,) = tiles()[:1]
    assert compose_grid([one]) is one


def test_tiles_of_different_sizes_are_refused():
    with pytest.raises(ValueError, match="differ in size"):
        compose_grid([*tiles()[:3], Image.new("RGB", (8, 8))])


def test_a_progress_preview_is_the_results_display_size_blurred_and_small():
    import io

    import numpy as np

    from bot.image_files import preview_bytes

    # An SDXL grid: the engine's preview is latent-sized (4 tiles of 128 px for 1024 px tiles).
    speckled = Image.fromarray(np.random.default_rng(0).integers(0, 255, (256, 256, 3), dtype=np.uint8))
    data = preview_bytes(speckled, (2048, 2048))
    preview = Image.open(io.BytesIO(data))
    assert preview.size == (2048, 2048) and preview.format == "JPEG"
    assert len(data) < 150_000  # uploads in a moment
    pixels = np.asarray(preview, dtype=np.float64)
    assert np.abs(np.diff(pixels, axis=1)).mean() < 2  # blurred: no speckle survives
