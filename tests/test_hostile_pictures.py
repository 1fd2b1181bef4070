"""Members' pictures built to hurt: each is refused in one line, or read with its colours and nothing else.

Every file is made here in code. The bounds asserted are the ones a member would notice (refused,
or the right colour) and generous ones on time and memory, so a loaded 2-core machine passes them;
`bench/picture_bench.py` measures the figures.
"""

from __future__ import annotations

import asyncio
import io
import json
import struct
import subprocess
import sys
import zipfile
import zlib
from functools import cache
from pathlib import Path

import pytest
from PIL import Image

from bot import picture_decoder
from bot.errors import UserError
from bot.member_pictures import PictureReader, decode_picture, read_attachment
from bot.picture_decoder import to_rgb
from tests.test_member_pictures import Upload, encoded, png_bomb

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 10 * 1024 * 1024


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_chunks(png: bytes) -> list[bytes]:
    kinds, position = [], 8
    while position + 8 <= len(png):
        length, kind = struct.unpack(">I4s", png[position : position + 8])
        kinds.append(kind)
        position += 12 + length
    assert position == len(png), "bytes after the last chunk"
    return kinds


def with_chunks(png: bytes, *extra: bytes, trailer: bytes = b"") -> bytes:
    """`png` with `extra` chunks right after IHDR, and `trailer` after IEND."""
    ihdr_end = 8 + 12 + 13
    return png[:ihdr_end] + b"".join(extra) + png[ihdr_end:] + trailer


def solid_png(width: int, height: int, rgb: tuple[int, int, int] = (40, 120, 200), *, depth: int = 8) -> bytes:
    """An RGB PNG of one colour, compressed row by row: 7,000² is ~160 KB, never held decoded here."""
    squeeze = zlib.compressobj(9)
    pixel = bytes(rgb) if depth == 8 else struct.pack(">3H", *(257 * v for v in rgb))
    row = b"\0" + pixel * width
    body = b"".join(squeeze.compress(row) for _ in range(height)) + squeeze.flush()
    header = struct.pack(">IIBBBBB", width, height, depth, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def jpeg_segments(data: bytes) -> list[tuple[int, int, int]]:
    """(marker, start, end) of each segment; a scan's entropy-coded data belongs to its SOS."""
    out, i = [], 2
    while i < len(data):
        marker = data[i + 1]
        if marker == 0xD9:
            out.append((marker, i, i + 2))
            break
        end = i + 2 + struct.unpack(">H", data[i + 2 : i + 4])[0]
        if marker == 0xDA:
            while True:
                end = data.index(b"\xff", end)
                if data[end + 1] == 0 or 0xD0 <= data[end + 1] <= 0xD7:
                    end += 2
                    continue
                break
        out.append((marker, i, end))
        i = end
    return out


@cache
def repeated_scan_jpeg(side: int = 3000, repeat: int = 1000) -> bytes:
    """A progressive JPEG whose last scan is repeated: ~94 KB at 3,000², seconds of libjpeg each."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (120, 60, 200)).save(buffer, "JPEG", progressive=True, quality=90)
    data = buffer.getvalue()
    _, start, end = [s for s in jpeg_segments(data) if s[0] == 0xDA][-1]
    return data[:end] + data[start:end] * repeat + data[end:]


# -- time: what a file can make the decoder do ------------------------------------------------


def test_a_jpeg_whose_last_scan_is_repeated_is_refused_from_its_bytes() -> None:
    hostile = repeated_scan_jpeg()
    assert len(hostile) < 120_000
    with pytest.raises(UserError, match=r"^`scans.jpg` is a JPEG of 1,010 scans; pictures may have at most 40"):
        decode_picture(hostile, "scans.jpg")


def test_an_ordinary_progressive_jpeg_is_read() -> None:
    photo = Image.effect_noise((400, 300), 50).convert("RGB")
    picture = decode_picture(encoded(photo, "JPEG", progressive=True), "photo.jpg")
    assert picture.size == (72, 56)


def test_a_picture_over_4_to_1_is_refused_from_its_header() -> None:
    # 28,000×1,780 is under the pixel cap; its pixels are never decoded (the body is 64 zero bytes).
    with pytest.raises(UserError, match=r"^`wide.png` is 28000×1780; pictures may be at most 4:1"):
        decode_picture(png_bomb(28_000, 1_780), "wide.png")


def test_an_animation_declaring_too_many_frames_is_refused_from_its_header() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    apng = encoded(frames[0], "PNG", save_all=True, append_images=frames[1:])
    start = apng.index(b"acTL") - 4
    forged = apng[:start] + chunk(b"acTL", struct.pack(">II", 100_000, 0)) + apng[start + 20 :]
    with pytest.raises(UserError, match=r"^`anim.png` is an animation of 100,000 frames; pictures may have at most"):
        decode_picture(forged, "anim.png")
    assert decode_picture(apng, "anim.png").getpixel((8, 8)) == (255, 0, 0)  # a real one: its first frame


def test_a_compressed_text_chunk_is_never_inflated() -> None:
    # 200 MB of zeros in 200 KB of zTXt: Pillow would inflate it (and refuse it as too large).
    bomb = chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"\0" * 200_000_000, 9))
    picture = decode_picture(with_chunks(encoded(Image.new("RGB", (64, 64), (9, 99, 199)), "PNG"), bomb), "z.png")
    assert picture.getpixel((4, 4)) == (9, 99, 199)


async def test_a_child_past_its_deadline_is_killed_and_the_member_told(tmp_path: Path) -> None:
    reader = PictureReader(timeout_s=0.001)
    upload = Upload("slow.png", encoded(Image.new("RGB", (64, 64)), "PNG"))
    with pytest.raises(UserError, match=r"^`slow.png` takes too long to decode; re-save it"):
        await read_attachment(upload, reader=reader, upload_limit=LIMIT, pixel_budget=64 * 64, data_dir=tmp_path)  # type: ignore[arg-type]


async def test_a_picture_needing_more_memory_than_allowed_is_refused(tmp_path: Path) -> None:
    # 16-bit colour takes the whole-picture path: 7,000² of it is 196 MB decoded, over a 150 MB cap.
    wide = solid_png(7000, 7000, depth=16)
    reader = PictureReader(memory_bytes=150 << 20)
    with pytest.raises(UserError, match=r"^`big.png` (needs more memory|can't be decoded within the memory)"):
        await read_attachment(
            Upload("big.png", wide),  # type: ignore[arg-type]
            reader=reader,
            upload_limit=LIMIT,
            pixel_budget=64 * 64,
            data_dir=tmp_path,
        )


def test_one_member_can_have_one_blends_worth_of_pictures_read_at_once() -> None:
    reader = PictureReader()
    with reader.reserve(1, 5):
        with pytest.raises(UserError, match=r"^I'm still reading 5 of your pictures; wait for them to finish"):
            with reader.reserve(1, 1):
                pass
        with reader.reserve(2, 5):  # another member is not held up
            pass
    with reader.reserve(1, 5):  # and the slots come back
        pass


# -- memory: proportional to the pixels kept ---------------------------------------------------

_MEASURE = """
import asyncio, json, sys
from pathlib import Path
from bot.member_pictures import PictureReader, store_input

def peak():  # since this process's exec (ru_maxrss would start from the pytest process's peak)
    return int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0]) * 1024

data = sys.stdin.buffer.read()
before = peak()
decoded = asyncio.run(PictureReader().decode(data, "big.png", 512 * 512))
store_input(decoded.png, Path(sys.argv[1]))
print(json.dumps({"bot": peak() - before, "child": decoded.peak_bytes, "size": [decoded.width, decoded.height]}))
"""


def test_a_7000_square_png_costs_the_bot_nothing_and_the_decoder_little(tmp_path: Path) -> None:
    data = solid_png(7000, 7000)
    assert len(data) < 400_000
    run = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(tmp_path)], input=data, capture_output=True, cwd=ROOT, check=True
    )
    figures = json.loads(run.stdout)
    assert figures["size"] == [512, 512]
    # Decoded whole it is 196 MB (Pillow keeps RGB in 4 bytes), and its RGB copy as much again.
    assert figures["bot"] < 50 << 20, figures
    assert figures["child"] < 150 << 20, figures


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA", "LA", "P", "I;16"])
def test_a_png_read_in_strips_has_the_same_pixels_as_one_read_whole(mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Noise, so every row filter (Sub, Up, Average, Paeth) is used across the strips' seams.
    noise = Image.effect_noise((203, 157), 80)
    image = Image.merge("RGBA", [noise, noise.rotate(90), noise.rotate(180), noise.transpose(0)])
    if mode == "I;16":
        image = noise.point(lambda v: v * 257).convert("I").convert("I;16")
    elif mode == "P":
        image = image.convert("RGB").quantize(64)
    else:
        image = image.convert(mode)
    data = encoded(image, "PNG")
    monkeypatch.setattr(picture_decoder, "STRIP_PIXELS", 203 * 3)  # strips of 3 rows
    strips = picture_decoder._png_in_strips(picture_decoder.png_pixels_only(data)[0], 1)
    assert strips is not None and strips.tobytes() == to_rgb(Image.open(io.BytesIO(data))).tobytes()


# -- colours: every mode members' tools write ---------------------------------------------------


def _close(got: tuple[int, ...], want: tuple[int, ...], within: int = 3) -> bool:
    return all(abs(g - w) <= within for g, w in zip(got, want, strict=True))


def _palette_picture(transparent: bool) -> Image.Image:
    image = Image.new("P", (32, 32), 1)
    image.putpalette([255, 0, 0, 0, 0, 255])
    image.paste(0, (0, 0, 16, 32))
    if transparent:
        image.info["transparency"] = 0
    return image


def _sixteen_bit_png(colour_type: int, samples: tuple[int, ...]) -> bytes:
    row = b"\0" + struct.pack(f">{len(samples)}H", *samples) * 32
    header = struct.pack(">IIBBBBB", 32, 32, 16, colour_type, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(row * 32)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


# (file as a member's tool writes it, a point in the picture, the colour there)
FILES = {
    "1-bit PNG": (encoded(Image.new("1", (32, 32), 1), "PNG"), (16, 16), (255, 255, 255)),
    "L PNG": (encoded(Image.new("L", (32, 32), 100), "PNG"), (16, 16), (100, 100, 100)),
    "LA PNG, half transparent": (encoded(Image.new("LA", (32, 32), (0, 128)), "PNG"), (16, 16), (127, 127, 127)),
    "16-bit LA PNG": (_sixteen_bit_png(4, (32768, 65535)), (16, 16), (128, 128, 128)),
    "P PNG": (encoded(_palette_picture(False), "PNG"), (4, 16), (255, 0, 0)),
    "P PNG with transparency, clear index": (encoded(_palette_picture(True), "PNG"), (4, 16), (255, 255, 255)),
    "P PNG with transparency, opaque index": (encoded(_palette_picture(True), "PNG"), (24, 16), (0, 0, 255)),
    "P GIF with transparency": (encoded(_palette_picture(True), "GIF"), (4, 16), (255, 255, 255)),
    "RGB PNG with a colour key": (
        encoded(Image.new("RGB", (32, 32), (10, 20, 30)), "PNG", transparency=(10, 20, 30)),
        (16, 16),
        (255, 255, 255),
    ),
    "RGBA PNG, half transparent": (
        encoded(Image.new("RGBA", (32, 32), (255, 0, 0, 128)), "PNG"),
        (16, 16),
        (255, 127, 127),
    ),
    "RGBA WebP, half transparent": (
        encoded(Image.new("RGBA", (32, 32), (0, 0, 255, 128)), "WEBP", lossless=True),
        (16, 16),
        (127, 127, 255),
    ),
    "16-bit greyscale PNG (I;16)": (encoded(Image.new("I;16", (32, 32), 32768), "PNG"), (16, 16), (128, 128, 128)),
    "16-bit greyscale PNG, white": (_sixteen_bit_png(0, (65535,)), (16, 16), (255, 255, 255)),
    "16-bit RGB PNG": (_sixteen_bit_png(2, (65535, 32768, 0)), (16, 16), (255, 128, 0)),
    "CMYK JPEG (Adobe, inverted)": (
        encoded(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG", quality=95),
        (16, 16),
        (255, 0, 0),
    ),
    "CMYK JPEG, 50 % black": (
        encoded(Image.new("CMYK", (32, 32), (0, 0, 0, 128)), "JPEG", quality=95),
        (16, 16),
        (127, 127, 127),
    ),
    "YCbCr JPEG": (encoded(Image.new("YCbCr", (32, 32), (76, 85, 255)), "JPEG", quality=95), (16, 16), (255, 0, 0)),
}


@pytest.mark.parametrize("name", FILES)
def test_each_mode_a_file_arrives_in_keeps_its_colours(name: str) -> None:
    data, (x, y), want = FILES[name]
    picture = decode_picture(data, "p.png", pixel_budget=64 * 64)
    got = picture.getpixel((x * picture.width // 32, y * picture.height // 32))  # every source is 32²
    assert _close(got, want), f"{name}: {got}, not {want}"


def _pa() -> Image.Image:
    image = Image.new("PA", (8, 8), (1, 128))
    image.putpalette([0, 0, 0, 0, 200, 0])
    return image


# Modes Pillow opens only from formats we don't accept (TIFF, PSD): the conversion, on its own.
IMAGES = {
    "I (16-bit values)": (Image.new("I", (8, 8), 32768), (128, 128, 128)),
    "F (0-1)": (Image.new("F", (8, 8), 0.5), (128, 128, 128)),
    "PA, half transparent": (_pa(), (127, 227, 127)),
    "YCbCr": (Image.new("YCbCr", (8, 8), (76, 85, 255)), (255, 0, 0)),
    "LAB grey": (Image.new("LAB", (8, 8), (137, 128, 128)), (128, 128, 128)),
    "LAB colour": (Image.new("LAB", (8, 8), (144, 150, 155)), (180, 120, 90)),
    "RGBa (premultiplied)": (Image.new("RGBa", (8, 8), (128, 0, 0, 128)), (255, 127, 127)),
}


@pytest.mark.parametrize("name", IMAGES)
def test_each_mode_pillow_opens_converts_with_its_colours(name: str) -> None:
    image, want = IMAGES[name]
    got = to_rgb(image).getpixel((4, 4))
    assert _close(got, want), f"{name}: {got}, not {want}"


# -- what we keep: pixels only ---------------------------------------------------------------


def _zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("payload.html", "<html><script>alert(1)</script></html>")
    return buffer.getvalue()


def _icc() -> bytes:
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


_BASE = encoded(Image.new("RGB", (96, 64), (30, 160, 90)), "PNG")
_EXIF = Image.Exif()
_EXIF[0x010E] = "<html><script>alert(1)</script></html>"
POLYGLOTS = {
    "PNG + ZIP": with_chunks(_BASE, trailer=_zip()),
    "PNG with an HTML tEXt": with_chunks(_BASE, chunk(b"tEXt", b"Comment\0<html><script>alert(1)</script></html>")),
    "PNG with a zTXt payload": with_chunks(_BASE, chunk(b"zTXt", b"Payload\0\0" + zlib.compress(_zip()))),
    "PNG with an iTXt": with_chunks(_BASE, chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0<x:xmpmeta/><html>")),
    "PNG with eXIf": with_chunks(_BASE, chunk(b"eXIf", _EXIF.tobytes())),
    "PNG with an ICC profile": with_chunks(_BASE, chunk(b"iCCP", b"sRGB\0\0" + zlib.compress(_icc()))),
    "PNG with trailing bytes": _BASE + b"<html><script>alert(1)</script></html>" * 100,
    "JPEG with a comment, EXIF, ICC and a ZIP after it": encoded(
        Image.new("RGB", (96, 64), (30, 160, 90)), "JPEG", comment=b"<html>", exif=_EXIF, icc_profile=_icc()
    )
    + _zip(),
}


@pytest.mark.parametrize("name", POLYGLOTS)
async def test_what_we_store_of_a_polyglot_is_its_pixels_and_nothing_else(name: str, tmp_path: Path) -> None:
    stored = await read_attachment(
        Upload("poly.png", POLYGLOTS[name]),  # type: ignore[arg-type]
        reader=PictureReader(),
        upload_limit=LIMIT,
        pixel_budget=64 * 64,
        data_dir=tmp_path,
    )
    kept = (tmp_path / stored.path).read_bytes()
    assert set(png_chunks(kept)) == {b"IHDR", b"IDAT", b"IEND"}  # no tEXt, zTXt, iTXt, eXIf, iCCP, and nothing after
    for payload in (b"PK\x03\x04", b"<html", b"script", b"Payload"):
        assert payload not in kept
    with Image.open(tmp_path / stored.path) as copy:
        assert _close(copy.getpixel((10, 10)), (30, 160, 90)) and copy.info == {}


async def test_pictures_decode_beside_each_other_without_the_default_executor(tmp_path: Path) -> None:
    """Ten hostile pictures in flight; the loop's own worker threads stay free for deliveries."""
    reader = PictureReader()
    loop = asyncio.get_running_loop()
    hostile = [Upload(f"h{n}.jpg", repeated_scan_jpeg()) for n in range(10)]
    reads = [
        asyncio.create_task(
            read_attachment(u, reader=reader, upload_limit=LIMIT, pixel_budget=64 * 64, data_dir=tmp_path)  # type: ignore[arg-type]
        )
        for u in hostile
    ]
    started = loop.time()
    await asyncio.to_thread(lambda: None)  # a delivery's trip to a worker thread
    assert loop.time() - started < 2.0
    for outcome in await asyncio.gather(*reads, return_exceptions=True):
        assert isinstance(outcome, UserError) and "scans" in str(outcome)
