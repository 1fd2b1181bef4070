"""Decoding one member's picture: run as a child process that the bot can time out and kill.

A picture's bytes are the one thing a member hands the bot that a C library then interprets, and
a small file can ask it for a lot: a progressive JPEG whose last scan is repeated a thousand times
costs a pass over every block per copy (94 KB, seconds of CPU); a 7,000² single-colour PNG is a few
hundred KB that decodes to 196 MB. So `bot.member_pictures` runs this file as `python -I` child
with its own CPU, memory and priority limits, and kills it past a wall-clock deadline: whatever
libjpeg or zlib do, they do it away from the event loop, the delivery threads and the bot's heap.

Inside the child every rule that the header can answer is answered before a pixel is decoded
(format, pixel count, aspect, JPEG scan count, declared frames), a PNG is handed to Pillow with
only the chunks its pixels need (no text, zTXt, iCCP, eXIf, animation or trailing bytes), a JPEG
is decoded at the smallest DCT scale that still covers twice the budget, and the picture is
converted to RGB strip by strip, each strip box-reduced at once, so only the decoded buffer and
a small result are ever held, never a full-size RGB copy. ICC profiles are dropped everywhere
(pictures are read as sRGB). The result is a fresh PNG of the fitted pixels and nothing else.

Imports only Pillow and the standard library (plus `engine.params`, which imports no torch), so
the child starts in ~60 ms. Refusals are `Refused`, one line naming the picture as `{name}`.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import sys
import warnings
import zlib
from collections.abc import Iterator
from pathlib import Path

from PIL import Image, UnidentifiedImageError

if __name__ == "__main__":  # run by path with -I: this checkout's root, not bot/, is where imports come from
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from engine.params import size_for_aspect  # noqa: E402

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_INPUT_PIXELS = 50_000_000  # about 7000×7000; larger pictures are refused from their header
MAX_ASPECT = 4  # at most 4:1 either way, as `--ar`
SIZE_MULTIPLE = 8  # diffusers needs sides divisible by 8
# libjpeg's progressive script has 10 scans (CMYK: 18; an EXIF thumbnail adds its own); each one
# more is another pass over every block of the picture, ~30 ms at 50 megapixels here.
MAX_JPEG_SCANS = 40
MAX_FRAMES = 1000  # as an animation declares them (APNG acTL, WebP); only the first is read
MAX_PNG_CHUNKS = 65_536  # a 10 MiB file of empty chunks would otherwise be 870,000 steps of Python
MAX_EXIF_BYTES = 64 * 1024  # as JPEG's APP1 allows; a larger PNG eXIf is ignored, not parsed
STRIP_PIXELS = 1 << 20  # converted to RGB this many pixels at a time

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_PIXEL_CHUNKS = frozenset({b"IHDR", b"PLTE", b"tRNS", b"IDAT", b"IEND"})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SIXTEEN_BIT = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
# PNG (colour type, bit depth) that `_png_in_strips` decodes: Pillow's raw mode for one row, bytes per pixel.
_PNG_ROWS = {(0, 8): ("L", 1), (2, 8): ("RGB", 3), (3, 8): ("P", 1), (4, 8): ("LA", 2), (6, 8): ("RGBA", 4)}
_PNG_ROWS[(0, 16)] = ("I;16B", 2)


class Refused(Exception):
    """A picture the bot won't read; the message is one line, with `{name}` for its name."""


def sniff(data: bytes) -> str:
    """The format the bytes say they are (never the filename or the content type)."""
    if data.startswith(_PNG_SIGNATURE):
        return "PNG"
    if data.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    raise Refused("{name} isn't a PNG, JPEG, WebP or GIF picture.")


def png_pixels_only(data: bytes) -> tuple[bytes, int, bytes | None]:
    """(the PNG with only the chunks its pixels need, declared frames, eXIf body or None).

    Text and compressed-text chunks, ICC profiles, animation frames and whatever follows IEND
    (a ZIP, an HTML page) never reach Pillow, so none of them costs a decompression or survives.
    """
    kept = [_PNG_SIGNATURE]
    frames, exif, position, chunks = 1, None, len(_PNG_SIGNATURE), 0
    while position + 8 <= len(data):
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise Refused(f"{{name}} has more than {MAX_PNG_CHUNKS:,} PNG chunks; a picture needs far fewer.")
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 12 + length
        if kind in _PNG_PIXEL_CHUNKS or end > len(data):
            kept.append(data[position:end])  # a cut-short chunk goes to Pillow, which says "truncated"
        elif kind == b"acTL" and length >= 4:
            frames = struct.unpack(">I", data[position + 8 : position + 12])[0]
        elif kind == b"eXIf" and length <= MAX_EXIF_BYTES:
            exif = data[position + 8 : position + 8 + length]
        if kind == b"IEND" or end > len(data):
            break
        position = end
    return b"".join(kept), frames, exif


def _orientation(image: Image.Image, fmt: str, png_exif: bytes | None) -> int:
    try:
        if fmt == "PNG":  # Pillow's getexif() on a PNG decodes every pixel, looking for eXIf after them
            if png_exif is None:
                return 1
            exif = Image.Exif()
            exif.load(png_exif)
        else:
            exif = image.getexif()
        value = exif.get(0x0112, 1)
    except Exception:  # a damaged EXIF block only loses the orientation it might have held
        return 1
    return value if isinstance(value, int) else 1


def _check_header(image: Image.Image, frames: int) -> None:
    width, height = image.size
    if width * height > MAX_INPUT_PIXELS:
        raise Refused(
            f"{{name}} is {width}×{height} pixels; pictures may have at most "
            f"{MAX_INPUT_PIXELS // 1_000_000} megapixels."
        )
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise Refused(f"{{name}} is {width}×{height}; pictures may be at most {MAX_ASPECT}:1 wide or tall.")
    if frames > MAX_FRAMES:
        raise Refused(f"{{name}} is an animation of {frames:,} frames; pictures may have at most {MAX_FRAMES:,}.")


def to_rgb(image: Image.Image) -> Image.Image:
    """Any mode Pillow opens, as RGB with its colours kept; alpha flattened onto white.

    16-bit greyscale (and `I`, which is how 16-bit data arrives) is scaled by 255/65535, never
    clipped; `F` is read as 0–1; CMYK by Pillow's (1−C)(1−K) (Adobe's inverted JPEGs are
    un-inverted by Pillow as it decodes them); YCbCr and LAB by Pillow's conversions.
    """
    mode = image.mode
    if "transparency" in image.info and mode in ("P", "L", "RGB", "1"):
        image, mode = image.convert("RGBA"), "RGBA"  # a palette's alpha, or a colour key: transparent
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT or mode == "I":
        wide = image if mode == "I" else image.convert("I")
        return wide.point(lambda v: v / 257 + 0.5).convert("L").convert("RGB")
    if mode == "F":
        return image.point(lambda v: v * 255 + 0.5).convert("L").convert("RGB")
    if mode in ("RGBA", "LA", "PA", "RGBa"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return image.convert("RGB")
    except ValueError:
        raise Refused(f"{{name}} uses the colour mode {mode}, which I can't read.") from None


def _reduced_rgb(image: Image.Image, factor: int) -> Image.Image:
    """`to_rgb(image)` box-reduced by `factor`, one strip at a time: no full-size RGB copy is made."""
    width, height = image.size
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    strip = max(factor, STRIP_PIXELS // width // factor * factor)
    for top in range(0, height, strip):
        part = to_rgb(image.crop((0, top, width, min(height, top + strip))))
        out.paste(part.reduce(factor) if factor > 1 else part, (0, top // factor))
    return out


def _png_chunks(png: bytes) -> Iterator[tuple[bytes, bytes]]:
    position = len(_PNG_SIGNATURE)
    while position + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        yield kind, png[position + 8 : position + 8 + length]
        position += 12 + length


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _stored_idat(rows: bytes) -> bytes:
    """An IDAT holding `rows` as zlib stored blocks: no compression, no checksums to compute.

    Pillow reads IDAT without checking its CRC and stops inflating at the last row, before the
    stream's Adler-32, so neither is written; the rows were inflated from the member's file and
    are copied, not trusted any further.
    """
    blocks = [b"\x78\x01"]
    for start in range(0, len(rows), 0xFFFF):
        block = rows[start : start + 0xFFFF]
        final = start + 0xFFFF >= len(rows)
        blocks.append(struct.pack("<BHH", final, len(block), 0xFFFF ^ len(block)) + block)
    body = b"".join(blocks)
    return struct.pack(">I", len(body)) + b"IDAT" + body + b"\0\0\0\0"


def _png_in_strips(png: bytes, factor: int) -> Image.Image | None:
    """`_reduced_rgb` of a PNG, decoded a strip of rows at a time; None if its layout doesn't allow it.

    Pillow decodes a PNG into one buffer of the declared size (196 MB for a 7,000² RGB picture
    that is 160 KB on the wire). Here the pixel stream is inflated a strip at a time, and each
    strip handed to Pillow as a PNG of its own, led by the previous strip's last row (unfiltered),
    so that row filters referring to the row above still see it. Interlaced and 1/2/4-bit PNGs
    (and 16-bit colour, which Pillow narrows as it reads) take the whole-picture path.
    """
    chunks = list(_png_chunks(png))
    header = chunks[0][1] if chunks and chunks[0][0] == b"IHDR" else b""
    if len(header) != 13:
        return None
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    if interlace or (colour, depth) not in _PNG_ROWS or width == 0:
        return None
    rawmode, per_pixel = _PNG_ROWS[(colour, depth)]
    row_bytes = 1 + width * per_pixel
    extra = b"".join(_png_chunk(kind, body) for kind, body in chunks if kind in (b"PLTE", b"tRNS"))
    pixels = b"".join(body for kind, body in chunks if kind == b"IDAT")
    inflate = zlib.decompressobj()
    out = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    strip = max(factor, STRIP_PIXELS // width // factor * factor)
    above = b""  # the previous strip's last row, as stored (no filter byte)
    for top in range(0, height, strip):
        rows = min(strip, height - top)
        wanted, filtered = rows * row_bytes, b""
        while len(filtered) < wanted:
            more = inflate.decompress(inflate.unconsumed_tail or pixels, wanted - len(filtered))
            pixels = b""
            if not more:
                raise Refused("{name} is damaged or cut short; try uploading it again.")
            filtered += more
        lead = b"\0" + above if above else b""
        ihdr = struct.pack(">IIBBBBB", width, rows + bool(above), depth, colour, 0, 0, 0)
        piece = (
            _PNG_SIGNATURE
            + _png_chunk(b"IHDR", ihdr)
            + extra
            + _stored_idat(lead + filtered)
            + _png_chunk(b"IEND", b"")
        )
        with Image.open(io.BytesIO(piece), formats=("PNG",)) as decoded:
            decoded.load()
            part = decoded.crop((0, 1, width, decoded.height)) if above else decoded
            above = part.crop((0, part.height - 1, width, part.height)).tobytes("raw", rawmode)
            rgb = to_rgb(part)
        out.paste(rgb.reduce(factor) if factor > 1 else rgb, (0, top // factor))
    return out


def fit_picture(data: bytes, pixel_budget: int) -> Image.Image:
    """The first frame of a PNG/JPEG/WebP/GIF as RGB, upright, fitted to about `pixel_budget` pixels.

    Sides are multiples of 8 and the aspect is kept; the result carries no metadata at all.
    """
    fmt = sniff(data)
    frames, png_exif = 1, None
    if fmt == "PNG":
        data, frames, png_exif = png_pixels_only(data)
    elif fmt == "JPEG" and (scans := data.count(b"\xff\xda")) > MAX_JPEG_SCANS:
        raise Refused(
            f"{{name}} is a JPEG of {scans:,} scans; pictures may have at most {MAX_JPEG_SCANS} (re-save it)."
        )
    try:
        with warnings.catch_warnings():
            # Pillow warns (and only errors at 2x its global cap); a bomb is a refusal either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=(fmt,)) as image:
                if fmt == "WEBP":
                    frames = getattr(image, "n_frames", 1)
                _check_header(image, frames)
                orientation = _orientation(image, fmt, png_exif)
                width, height = image.size  # as stored; EXIF may turn it
                target = size_for_aspect(width, height, pixel_budget, SIZE_MULTIPLE)
                if fmt == "JPEG":
                    image.draft(image.mode, (2 * target[0], 2 * target[1]))  # DCT scaling: 1/2, 1/4, 1/8
                factor = max(1, min(image.width // (2 * target[0]), image.height // (2 * target[1])))
                strips = _png_in_strips(data, factor) if fmt == "PNG" else None
                if strips is not None:
                    reduced = strips
                else:
                    image.load()
                    reduced = _reduced_rgb(image, factor)
    except Refused:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise Refused(
            f"{{name}} is too large to decode; pictures may have at most {MAX_INPUT_PIXELS // 1_000_000} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise Refused("{name} isn't a PNG, JPEG, WebP or GIF picture.") from None
    except MemoryError:
        raise Refused("{name} needs more memory to decode than a picture may use.") from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error):
        # Pillow's words for truncated or corrupt data ("image file is truncated", "broken data stream").
        raise Refused("{name} is damaged or cut short; try uploading it again.") from None
    if orientation in _TRANSPOSE:
        reduced = reduced.transpose(_TRANSPOSE[orientation])
        if orientation >= 5:
            target = target[1], target[0]
    return reduced.resize(target, Image.Resampling.LANCZOS)


def encode_png(image: Image.Image) -> bytes:
    """The pixels as PNG, and nothing else: no text, EXIF or ICC chunk, whatever `image.info` says."""
    clean = Image.new("RGB", image.size)
    clean.paste(image)
    buffer = io.BytesIO()
    clean.save(buffer, format="PNG")
    return buffer.getvalue()


# -- the child process -------------------------------------------------------------------------


def _limit(memory_bytes: int, cpu_seconds: int) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu_seconds, cpu_seconds + 1))
    # Renders and deliveries come first on busy cores, but not so far first that a render (torch
    # keeps every core busy) starves the picture: at nice 4 it keeps about a third of a core.
    os.nice(4)


def _peak_memory() -> int:
    """This process's high-water mark of resident memory, in bytes (0 where /proc can't say)."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def main() -> None:
    """stdin: one JSON line (pixel_budget, memory_bytes, cpu_seconds), then the picture's bytes.

    stdout: `ok W H PEAK\\n` and the PNG (PEAK: the child's peak memory, bytes), or `refused\\n`
    and the one-line reason.
    """
    stdin = sys.stdin.buffer
    request = json.loads(stdin.readline())
    data = stdin.read()
    _limit(request["memory_bytes"], request["cpu_seconds"])
    out = sys.stdout.buffer
    try:
        picture = fit_picture(data, request["pixel_budget"])
        png = encode_png(picture)
    except Refused as refused:
        out.write(b"refused\n" + str(refused).encode())
    except MemoryError:
        out.write(b"refused\n{name} needs more memory to decode than a picture may use.")
    else:
        out.write(f"ok {picture.width} {picture.height} {_peak_memory()}\n".encode() + png)
    out.flush()


if __name__ == "__main__":
    main()
