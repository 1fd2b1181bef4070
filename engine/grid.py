"""Pure functions for grids: compose four tiles into one image and split it again."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image


def compose_grid(tiles: Sequence[Image.Image], columns: int = 2) -> Image.Image:
    """Lay tiles out row by row; a single tile is returned as it is."""
    if not tiles:
        raise ValueError("compose_grid needs at least one tile")
    if len(tiles) == 1:
        return tiles[0]
    width, height = tiles[0].size
    if any(t.size != (width, height) for t in tiles):
        raise ValueError(f"tiles differ in size: {[t.size for t in tiles]}")
    rows = -(-len(tiles) // columns)
    grid = Image.new("RGB", (width * columns, height * rows))
    for i, tile in enumerate(tiles):
        grid.paste(tile.convert("RGB"), ((i % columns) * width, (i // columns) * height))
    return grid


def split_grid(grid: Image.Image, count: int = 4, columns: int = 2) -> list[Image.Image]:
    """Inverse of `compose_grid` for `count` equally sized tiles."""
    rows = -(-count // columns)
    if grid.width % columns or grid.height % rows:
        raise ValueError(f"a {grid.width}x{grid.height} grid does not split into {columns}x{rows}")
    width, height = grid.width // columns, grid.height // rows
    return [
        grid.crop(
            ((i % columns) * width, (i // columns) * height, (i % columns + 1) * width, (i // columns + 1) * height)
        )
        for i in range(count)
    ]
