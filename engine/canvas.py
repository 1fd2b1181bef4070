"""The geometry of the edit buttons: where the kept picture goes on a new canvas, and which cells
Vary (Region) redraws. Pure Python and Pillow, no torch: the bot sizes jobs and draws the cell
overlay with it; the engine's outpaint and inpaint actions receive what `place` and
`region_mask` make.

| button            | new canvas                                   | the kept picture                          |
|-------------------|----------------------------------------------|-------------------------------------------|
| Zoom Out 2x / 1.5x| same size                                    | centred, at 1/2 or 1/1.5 of the frame     |
| Custom Zoom       | same pixel count, optionally a new aspect    | centred, fitted, then shrunk by the zoom  |
| Make Square       | square, same pixel count                     | centred, its long side edge to edge       |
| Pan ⬅ ➡ ⬆ ⬇      | half a tile longer in that direction         | full size, against the opposite edge      |
| Vary (Region)     | same size                                    | everything but the chosen cells           |

Canvas sides are multiples of 8 (what latent diffusion needs), or of the model family's coarser
`multiple` (Flux-style families pack 2x2 latents: 16) where a new frame is made: a Custom Zoom
`--ar`, Make Square and Pan round to it rather than ask for a size the model cannot draw. The kept
picture's box need not be.
Masks follow diffusers' convention: white is drawn, black is kept.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable
from dataclasses import dataclass

from PIL import Image, ImageDraw

from engine.params import size_for_aspect

MULTIPLE = 8  # canvas sides are multiples of this
ZOOM_MIN, ZOOM_MAX = 1.0, 2.0  # Custom Zoom's --zoom range (Midjourney's)
ZOOM_OUT_STEPS = (2.0, 1.5)  # the two Zoom Out buttons
REGION_CELLS = 16  # about this many cells in the Vary (Region) grid (4x4 on a square picture)
REGION_CELLS_MAX = 20  # a Discord select holds 25 options; the rest are shortcuts


class Direction(enum.StrEnum):
    LEFT = "left"
    RIGHT = "right"
    UP = "up"
    DOWN = "down"


@dataclass(frozen=True, slots=True)
class Outpaint:
    """A new canvas and the box (left, top, right, bottom) on it where the kept picture goes."""

    width: int
    height: int
    box: tuple[int, int, int, int]

    @property
    def kept_size(self) -> tuple[int, int]:
        left, top, right, bottom = self.box
        return right - left, bottom - top


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if value < MULTIPLE or value % MULTIPLE:
            raise ValueError(f"{name} must be a positive multiple of {MULTIPLE}, got {value}")


def _multiple(multiple: int) -> int:
    """A family's size multiple, checked: a positive multiple of 8."""
    if multiple < MULTIPLE or multiple % MULTIPLE:
        raise ValueError(f"the size multiple must be a positive multiple of {MULTIPLE}, got {multiple}")
    return multiple


def _centred(canvas_w: int, canvas_h: int, kept_w: float, kept_h: float) -> Outpaint:
    w, h = max(1, round(kept_w)), max(1, round(kept_h))
    left, top = (canvas_w - w) // 2, (canvas_h - h) // 2
    return Outpaint(canvas_w, canvas_h, (left, top, left + w, top + h))


def zoom_out(
    width: int, height: int, zoom: float, aspect: tuple[int, int] | None = None, multiple: int = MULTIPLE
) -> Outpaint:
    """Zoom Out / Custom Zoom: the picture shrinks to 1/zoom of a frame with the same pixel count.

    With a new `aspect` the frame takes that shape (same pixel count, sides rounded to `multiple`)
    and the picture is first fitted inside it, so `--zoom 1 --ar 16:9` on a square only widens the scene.
    """
    _check_size(width, height)
    if not ZOOM_MIN <= zoom <= ZOOM_MAX:
        raise ValueError(f"--zoom must be between {ZOOM_MIN:g} and {ZOOM_MAX:g}, got {zoom:g}")
    if aspect is None:
        frame_w, frame_h = width, height
    else:
        frame_w, frame_h = size_for_aspect(*aspect, width * height, _multiple(multiple))
    fit = min(frame_w / width, frame_h / height) / zoom
    plan = _centred(frame_w, frame_h, width * fit, height * fit)
    if plan.kept_size == (frame_w, frame_h):
        raise ValueError("--zoom 1 at the same aspect ratio changes nothing: zoom out further or give a new --ar")
    return plan


def make_square(width: int, height: int, multiple: int = MULTIPLE) -> Outpaint:
    """Make Square: a square frame of the same pixel count; the short side is extended."""
    if width == height:
        raise ValueError("the picture is already square")
    return zoom_out(width, height, 1.0, (1, 1), multiple)


def pan_step(tile_size: int, multiple: int = MULTIPLE) -> int:
    """How far one Pan extends the picture: half a tile of the model, in whole multiples of `multiple`."""
    multiple = _multiple(multiple)
    return max(multiple, tile_size // 2 // multiple * multiple)


def pan(width: int, height: int, direction: Direction, step: int, max_side: int, multiple: int = MULTIPLE) -> Outpaint:
    """Pan: the canvas grows by `step` in `direction` (less when that would pass `max_side`), in
    whole multiples of `multiple`, so a picture the family can draw stays one it can draw."""
    _check_size(width, height)
    multiple = _multiple(multiple)
    direction = Direction(direction)
    horizontal = direction in (Direction.LEFT, Direction.RIGHT)
    side = width if horizontal else height
    limit = max_side // multiple * multiple
    grow = min(step, limit - side) // multiple * multiple
    if grow <= 0:
        what = "wide" if horizontal else "tall"
        raise ValueError(f"the picture is already {side} px {what}, this server's limit: it cannot pan further")
    new_w, new_h = (width + grow, height) if horizontal else (width, height + grow)
    left = grow if direction is Direction.LEFT else 0
    top = grow if direction is Direction.UP else 0
    return Outpaint(new_w, new_h, (left, top, left + width, top + height))


def place(picture: Image.Image, plan: Outpaint) -> tuple[Image.Image, Image.Image]:
    """The canvas with the picture resized into its box, and the mask of the new area (white).

    The new area is left black here; the outpaint action fills it from the picture's own colours.
    """
    left, top, right, bottom = plan.box
    canvas = Image.new("RGB", (plan.width, plan.height))
    resample = Image.Resampling.LANCZOS
    canvas.paste(picture.convert("RGB").resize((right - left, bottom - top), resample), (left, top))
    mask = Image.new("L", (plan.width, plan.height), 255)
    mask.paste(0, plan.box)
    return canvas, mask


# -- Vary (Region) -----------------------------------------------------------------------------


def region_grid(width: int, height: int) -> tuple[int, int]:
    """(columns, rows) of the Vary (Region) grid: cells close to square, about REGION_CELLS of them."""
    if width <= 0 or height <= 0:
        raise ValueError(f"the picture must have a size, got {width}x{height}")
    aspect = width / height
    columns = max(1, round(math.sqrt(REGION_CELLS * aspect)))
    rows = max(1, round(math.sqrt(REGION_CELLS / aspect)))
    while columns * rows > REGION_CELLS_MAX:
        if columns >= rows:
            columns -= 1
        else:
            rows -= 1
    return columns, rows


def cell_boxes(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """Each cell's (left, top, right, bottom), numbered row by row from 1 (index 0 is cell 1)."""
    columns, rows = region_grid(width, height)
    xs = [round(i * width / columns) for i in range(columns + 1)]
    ys = [round(j * height / rows) for j in range(rows + 1)]
    return [(xs[i], ys[j], xs[i + 1], ys[j + 1]) for j in range(rows) for i in range(columns)]


def region_shortcuts(width: int, height: int) -> dict[str, frozenset[int]]:
    """Named sets of cells for the picker: "everything but the middle" keeps a centred subject."""
    columns, rows = region_grid(width, height)
    cells = [(j * columns + i + 1, i, j) for j in range(rows) for i in range(columns)]
    named = {
        "Everything but the middle": {n for n, i, j in cells if i in (0, columns - 1) or j in (0, rows - 1)},
        "Left half": {n for n, i, _ in cells if i < columns // 2},
        "Right half": {n for n, i, _ in cells if i >= columns - columns // 2},
        "Top half": {n for n, _, j in cells if j < rows // 2},
        "Bottom half": {n for n, _, j in cells if j >= rows - rows // 2},
    }
    # A shortcut that is every cell or none would only be refused.
    return {name: frozenset(chosen) for name, chosen in named.items() if 0 < len(chosen) < len(cells)}


def region_mask(width: int, height: int, cells: Iterable[int]) -> Image.Image:
    """The mask (white: redraw) of the chosen cells, numbered as in `cell_boxes`."""
    boxes = cell_boxes(width, height)
    chosen = sorted(set(cells))
    if not chosen:
        raise ValueError("choose at least one cell to redraw")
    for cell in chosen:
        if not 1 <= cell <= len(boxes):
            raise ValueError(f"cell {cell} is not on the grid (1-{len(boxes)})")
    if len(chosen) == len(boxes):
        raise ValueError("every cell is chosen: that redraws the whole picture (use Vary (Strong) instead)")
    mask = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(mask)
    for cell in chosen:
        left, top, right, bottom = boxes[cell - 1]
        draw.rectangle((left, top, right - 1, bottom - 1), fill=255)
    return mask
