"""What the edit buttons (Zoom Out, Custom Zoom, Make Square, Pan, Vary (Region)) record on a job,
and the canvas and mask each one is drawn from. No Discord here: the cog makes an `EditSpec` with
the functions below, the scheduler turns a stored one back into engine inputs with
`render_inputs`, so a job re-queued after a crash is drawn exactly as it was asked for.

The record is what the member chose (zoom and aspect, direction and distance, cells), never
pixels: the picture itself is the parent job's stored image.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from PIL import Image

from bot.spec import EditSpec
from engine import canvas
from engine.canvas import Direction
from engine.params import parse_aspect

_T = TypeVar("_T")

PAN_ARROWS = {Direction.LEFT: "⬅️", Direction.RIGHT: "➡️", Direction.UP: "⬆️", Direction.DOWN: "⬇️"}

_ZOOM_PARAM = re.compile(r"(?:^|\s)(?:--|[—–]-?)zoom(?:\s+(\S+))?", re.IGNORECASE)


class EditError(ValueError):
    """The edit cannot be made as asked; the message is for the member."""


@dataclass(frozen=True, slots=True)
class RenderInputs:
    init_image: Image.Image  # the canvas with the kept picture on it (Vary (Region): the picture)
    mask_image: Image.Image  # white: drawn, black: kept


def split_zoom(text: str) -> tuple[str, float | None]:
    """Custom Zoom's text -> (the prompt without `--zoom`, the zoom or None when absent).

    `a lighthouse --ar 16:9 --zoom 1.5` -> (`a lighthouse --ar 16:9`, 1.5). The rest is an
    ordinary prompt (its `--ar` sets the new frame).
    """
    found = list(_ZOOM_PARAM.finditer(text))
    if not found:
        return text.strip(), None
    if len(found) > 1:
        raise EditError("--zoom is given more than once.")
    match = found[0]
    value = match[1]
    try:
        zoom = float(value) if value is not None else None
    except ValueError:
        zoom = None
    if zoom is None or not canvas.ZOOM_MIN <= zoom <= canvas.ZOOM_MAX:
        shown = f"`{value[:20]}`" if value else "nothing"
        raise EditError(f"--zoom takes a number from 1 to 2 (how far to zoom out), got {shown}.")
    rest = (text[: match.start()] + " " + text[match.end() :]).strip()
    return re.sub(r"\s{2,}", " ", rest), zoom


def zoom(
    width: int, height: int, factor: float, aspect: tuple[int, int] | None = None, *, multiple: int = canvas.MULTIPLE
) -> EditSpec:
    """Zoom Out / Custom Zoom of a `width`×`height` picture; a new `aspect`'s frame in sides of `multiple`."""
    edit = EditSpec(zoom=factor, aspect=f"{aspect[0]}:{aspect[1]}" if aspect else None, multiple=multiple)
    _checked(plan, edit, width, height)
    return edit


def make_square(width: int, height: int, *, multiple: int = canvas.MULTIPLE) -> EditSpec:
    """Make Square: a square frame at the same pixel count; the picture's short side is extended."""
    if width == height:
        raise EditError("The picture is already square.")
    return EditSpec(aspect="1:1", multiple=multiple)


def pan(
    width: int, height: int, direction: Direction, *, tile_size: int, size_limit: int, multiple: int = canvas.MULTIPLE
) -> EditSpec:
    """Pan by half a tile of the model, as far as the server's size limit allows, in sides of `multiple`."""
    step = canvas.pan_step(tile_size, multiple)
    grown = _checked(canvas.pan, width, height, direction, step, size_limit, multiple)
    pan_by = grown.width - width + grown.height - height
    return EditSpec(pan=Direction(direction).value, pan_by=pan_by, multiple=multiple)


def region(width: int, height: int, cells: Iterable[int]) -> EditSpec:
    """Vary (Region): the chosen cells, checked against the picture's grid."""
    chosen = tuple(sorted(set(cells)))
    _checked(canvas.region_mask, width, height, chosen)
    return EditSpec(cells=chosen)


def plan(edit: EditSpec, width: int, height: int) -> canvas.Outpaint | None:
    """The new canvas of a Zoom, Make Square or Pan of a `width`×`height` picture; None for Vary (Region)."""
    if edit.cells:
        return None
    if edit.pan is not None:
        grown = max(width, height) + edit.pan_by
        return canvas.pan(width, height, Direction(edit.pan), edit.pan_by, grown, edit.multiple)
    aspect = parse_aspect(edit.aspect) if edit.aspect else None
    return canvas.zoom_out(width, height, edit.zoom or 1.0, aspect, edit.multiple)


def result_size(edit: EditSpec, width: int, height: int) -> tuple[int, int]:
    """The size of each picture the edit makes from a `width`×`height` one."""
    planned = plan(edit, width, height)
    return (planned.width, planned.height) if planned else (width, height)


def render_inputs(edit: EditSpec, source: Image.Image) -> RenderInputs:
    """The canvas and mask a stored edit is drawn from, given its parent's picture."""
    planned = plan(edit, *source.size)
    if planned is None:
        return RenderInputs(source.convert("RGB"), canvas.region_mask(source.width, source.height, edit.cells))
    return RenderInputs(*canvas.place(source, planned))


def describe(edit: EditSpec) -> str:
    """What the edit did, after its kind's label: `2x`, `1.5x --ar 16:9`, `➡️`, `cells 6, 7` ('' for a square)."""
    if edit.cells:
        return "cells " + ", ".join(map(str, edit.cells))
    if edit.pan is not None:
        return PAN_ARROWS[Direction(edit.pan)]
    if edit.zoom is None:
        return ""
    return f"{edit.zoom:g}x" + (f" --ar {edit.aspect}" if edit.aspect else "")


def _checked(function: Callable[..., _T], *args: Any) -> _T:
    """Call an engine.canvas function; its ValueError becomes a sentence for the member."""
    try:
        return function(*args)
    except ValueError as exc:
        text = str(exc)
        raise EditError(text[0].upper() + text[1:] + ("" if text.endswith((".", ")")) else ".")) from None
