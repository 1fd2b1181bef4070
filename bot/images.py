"""Saving our own copy of every image, and encoding images to fit Discord's upload limit."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from PIL import Image

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


def preview_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=70)
    return buffer.getvalue()
