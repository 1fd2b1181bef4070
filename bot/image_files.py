"""Saving our own copy of every image, and encoding images to fit Discord's upload limit."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageFilter

from engine.grid import compose_grid

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


def save_png(image: Image.Image, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    image.save(tmp, format="PNG")
    tmp.replace(path)  # never leave a half-written image behind a crash


def encode_for_upload(image: Image.Image, stem: str, limit: int = DEFAULT_UPLOAD_LIMIT) -> tuple[bytes, str]:
    """PNG when it fits; else WebP, then smaller WebP, so the upload never bounces.

    Returns (data, filename).
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False)
    if buffer.tell() <= limit:
        return buffer.getvalue(), f"{stem}.png"
    for quality in (92, 80):
        buffer = io.BytesIO()
        image.save(buffer, format="WEBP", quality=quality, method=4)
        if buffer.tell() <= limit:
            return buffer.getvalue(), f"{stem}.webp"
    scaled = image
    while True:
        scaled = scaled.resize(
            (max(1, scaled.width * 3 // 4), max(1, scaled.height * 3 // 4)), Image.Resampling.LANCZOS
        )
        buffer = io.BytesIO()
        scaled.save(buffer, format="WEBP", quality=80, method=4)
        if buffer.tell() <= limit or scaled.width <= 64:
            return buffer.getvalue(), f"{stem}.webp"


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        return image.convert("RGB")


def encode_grid(paths: Sequence[Path], stem: str, limit: int = DEFAULT_UPLOAD_LIMIT) -> tuple[bytes, str]:
    """Our stored tiles as one upload-ready grid (a single tile stays as it is)."""
    return encode_for_upload(compose_grid([load_rgb(path) for path in paths]), stem, limit)


PREVIEW_BLUR = 1 / 48  # Gaussian blur radius, as a fraction of the preview's longer side
PREVIEW_QUALITY = 60
PREVIEW_WORK_SIDE = 256  # the blur is computed at most this large


def preview_bytes(image: Image.Image, size: tuple[int, int]) -> bytes:
    """A progress preview as the member will see the result: at its display `size`, blurred.

    The engine's preview has the latents' resolution (a 64 px tile gives 8 px), which Discord
    shows as a speck. Scaled up and blurred, as Midjourney's previews are, it shows the
    composition without pretending to detail; a blurred JPEG stays small, so it uploads fast.
    """
    # Blur at a small working size (cheap at any display size), then scale to the display size.
    factor = min(1.0, PREVIEW_WORK_SIDE / max(size))
    work = (max(1, round(size[0] * factor)), max(1, round(size[1] * factor)))
    small = image.convert("RGB").resize(work, Image.Resampling.BICUBIC)
    small = small.filter(ImageFilter.GaussianBlur(max(1.0, max(work) * PREVIEW_BLUR)))
    blurred = small.resize(size, Image.Resampling.BILINEAR)
    buffer = io.BytesIO()
    blurred.save(buffer, format="JPEG", quality=PREVIEW_QUALITY)
    return buffer.getvalue()


REGION_OVERLAY_SIDE = 512  # the Vary (Region) picture is shown at least this large, so numbers are readable


def region_overlay(image: Image.Image) -> Image.Image:
    """The picture with the Vary (Region) grid drawn over it: cell lines and each cell's number.

    Small pictures are enlarged first (the shipped model's are 64 px), so every number is legible.
    """
    from PIL import ImageDraw, ImageFont

    from engine.canvas import cell_boxes

    scale = max(1.0, REGION_OVERLAY_SIDE / max(image.size))
    shown = image.convert("RGB").resize(
        (round(image.width * scale), round(image.height * scale)), Image.Resampling.LANCZOS
    )
    draw = ImageDraw.Draw(shown, "RGBA")
    boxes = [tuple(round(v * scale) for v in box) for box in cell_boxes(image.width, image.height)]
    side = min(min(right - left, bottom - top) for left, top, right, bottom in boxes)
    font = ImageFont.load_default(size=max(10, side // 3))
    for number, (left, top, right, bottom) in enumerate(boxes, start=1):
        draw.rectangle((left, top, right - 1, bottom - 1), outline=(255, 255, 255, 220), width=max(1, side // 48))
        centre = ((left + right) / 2, (top + bottom) / 2)
        draw.text(
            centre,
            str(number),
            font=font,
            anchor="mm",
            fill="white",
            stroke_width=max(1, side // 24),
            stroke_fill="black",
        )
    return shown
