"""What the edit buttons (Zoom Out, Custom Zoom, Make Square, Pan, Vary (Region)) record on a job,
and the canvas and mask each one renders from. No Discord here: the cog builds jobs with
`edit_params`, the scheduler turns a stored job back into engine inputs with `render_inputs`, so a
job re-queued after a crash is drawn exactly as it was asked for.

The recorded values are what the member chose — the zoom and aspect, the pan direction and how far,
the cells — never pixels: the picture itself is the parent job's stored tile.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from PIL import Image

from engine import canvas
from engine.canvas import Direction
from engine.params import VARY_REGION

ZOOM = "zoom"  # Zoom Out 2x / 1.5x and Custom Zoom
SQUARE = "square"  # Make Square
PAN = "pan"  # ⬅ ➡ ⬆ ⬇
REGION = "region"  # Vary (Region)
OUTPAINT_KINDS = (ZOOM, SQUARE, PAN)

PAN_ARROWS = {Direction.LEFT: "⬅️", Direction.RIGHT: "➡️", Direction.UP: "⬆️", Direction.DOWN: "⬇️"}

_ZOOM_PARAM = re.compile(r"(?:^|\s)(?:--|[—–]-?)zoom(?:\s+(\S+))?", re.IGNORECASE)


class EditError(ValueError):
    """The edit cannot be made as asked; the message is for the member."""


@dataclass(frozen=True, slots=True)
class RenderInputs:
    init_image: Image.Image
    mask_image: Image.Image
    width: int
    height: int


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


def zoom_params(width: int, height: int, zoom: float, aspect: tuple[int, int] | None = None) -> dict[str, Any]:
    """Zoom Out / Custom Zoom of a `width`×`height` picture: what the job records."""
    plan = _checked(canvas.zoom_out, width, height, zoom, aspect)
    aspect_text = f"{aspect[0]}:{aspect[1]}" if aspect else None
    return {"zoom": zoom, "zoom_aspect": aspect_text, "width": plan.width, "height": plan.height}


def square_params(width: int, height: int) -> dict[str, Any]:
    plan = _checked(canvas.make_square, width, height)
    return {"width": plan.width, "height": plan.height}


def pan_params(width: int, height: int, direction: Direction, *, tile_size: int, size_limit: int) -> dict[str, Any]:
    """Pan by half a tile of the model, as far as the server's size limit allows."""
    plan = _checked(canvas.pan, width, height, direction, canvas.pan_step(tile_size), size_limit)
    grown = plan.width - width + plan.height - height
    return {"pan": Direction(direction).value, "pan_by": grown, "width": plan.width, "height": plan.height}


def region_params(width: int, height: int, cells: Iterable[int]) -> dict[str, Any]:
    chosen = sorted(set(cells))
    _checked(canvas.region_mask, width, height, chosen)
    return {"cells": chosen, "strength": VARY_REGION, "width": width, "height": height}


def render_inputs(kind: str, params: dict[str, Any], source: Image.Image) -> RenderInputs:
    """The canvas and mask a stored edit job renders from, given its parent's picture."""
    width, height = source.size
    if kind == REGION:
        mask = canvas.region_mask(width, height, params["cells"])
        return RenderInputs(source.convert("RGB"), mask, width, height)
    if kind == ZOOM:
        aspect = params.get("zoom_aspect")
        ratio = tuple(int(v) for v in aspect.split(":")) if aspect else None
        plan = canvas.zoom_out(width, height, float(params["zoom"]), ratio)  # type: ignore[arg-type]
    elif kind == SQUARE:
        plan = canvas.make_square(width, height)
    elif kind == PAN:
        step = int(params["pan_by"])
        plan = canvas.pan(width, height, Direction(params["pan"]), step, max(width, height) + step)
    else:
        raise ValueError(f"{kind!r} is not an edit")
    image, mask = canvas.place(source, plan)
    return RenderInputs(image, mask, plan.width, plan.height)


def describe(kind: str, params: dict[str, Any]) -> str:
    """What the edit did, for the result's title: `Zoom Out 2x`, `Pan ➡️`, `Vary (Region) 6, 7`."""
    if kind == ZOOM:
        zoom = f"{float(params['zoom']):g}x"
        aspect = params.get("zoom_aspect")
        return f"Zoom Out {zoom}" + (f" --ar {aspect}" if aspect else "")
    if kind == SQUARE:
        return "Make Square"
    if kind == PAN:
        return f"Pan {PAN_ARROWS[Direction(params['pan'])]}"
    if kind == REGION:
        return "Vary (Region) " + ", ".join(map(str, params["cells"]))
    raise ValueError(f"{kind!r} is not an edit")


def _checked(function: Any, *args: Any) -> Any:
    try:
        return function(*args)
    except ValueError as exc:
        raise EditError(_sentence(str(exc))) from None


def _sentence(text: str) -> str:
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?", ")")) else text + "."
