"""Members' pictures: each bad input is refused with one line, and a good one becomes our own copy."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from bot.errors import UserError
from bot.member_pictures import (
    PictureReader,
    attachment_ref,
    cdn_hosts_for,
    decode_picture,
    read_attachment,
    split_leading_urls,
)

LIMIT = 10 * 1024 * 1024


def encoded(image: Image.Image, fmt: str, **kw) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kw)
    return buffer.getvalue()


def png_bomb(width: int, height: int) -> bytes:
    """A valid PNG header claiming width×height, with a tiny (never decoded) body."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


class Upload:
    """What read_attachment uses of a discord.Attachment: a declared size, a name, and read()."""

    def __init__(self, filename: str, data: bytes, *, size: int | None = None) -> None:
        self.filename, self.data = filename, data
        self.size = len(data) if size is None else size
        self.reads = 0

    async def read(self) -> bytes:
        self.reads += 1
        return self.data


async def read(upload: Upload, tmp_path: Path, budget: int = 64 * 64, reader: PictureReader | None = None):
    return await read_attachment(
        upload,  # type: ignore[arg-type]
        reader=reader or PictureReader(),
        upload_limit=LIMIT,
        pixel_budget=budget,
        data_dir=tmp_path,
    )


async def test_a_picture_is_fitted_to_the_models_budget_and_stored(tmp_path: Path) -> None:
    photo = Upload("photo.jpg", encoded(Image.new("RGB", (640, 480), (200, 30, 30)), "JPEG"))
    stored = await read(photo, tmp_path)
    assert (stored.width, stored.height) == (72, 56)  # 4:3 at about 64², sides multiples of 8
    assert stored.name == "photo.jpg"
    with Image.open(tmp_path / stored.path) as copy:
        assert copy.size == (72, 56) and copy.mode == "RGB"
    assert (await read(photo, tmp_path)).path == stored.path  # the same picture is stored once


async def test_the_declared_size_is_refused_before_any_download(tmp_path: Path) -> None:
    huge = Upload("huge.png", b"", size=1 << 30)
    with pytest.raises(UserError, match=r"`huge.png` is 1.0 GiB; pictures may be up to 10.0 MiB here"):
        await read(huge, tmp_path)
    assert huge.reads == 0


async def test_more_bytes_than_declared_are_refused(tmp_path: Path) -> None:
    liar = Upload("liar.png", b"\0" * (LIMIT + 1), size=100)
    with pytest.raises(UserError, match="larger than the 10.0 MiB allowed"):
        await read(liar, tmp_path)


@pytest.mark.parametrize(
    ("filename", "data"),
    [
        ("notes.png", b"these are my notes, not a picture\n"),
        ("drawing.bmp", encoded(Image.new("RGB", (8, 8)), "BMP")),  # a real picture, but not a format we open
    ],
)
def test_content_is_sniffed_not_trusted_from_the_name(filename: str, data: bytes) -> None:
    with pytest.raises(UserError, match=rf"`{filename}` isn't a PNG, JPEG, WebP or GIF picture"):
        decode_picture(data, filename)


def test_a_decompression_bomb_is_refused_from_its_header() -> None:
    with pytest.raises(UserError, match="`bomb.png` is too large to decode; pictures may have at most 50 megapixels"):
        decode_picture(png_bomb(20_000, 20_000), "bomb.png")


def test_a_picture_over_the_pixel_cap_but_under_pillows_is_refused() -> None:
    with pytest.raises(UserError, match=r"is 8000×8000 pixels; pictures may have at most 50 megapixels"):
        decode_picture(png_bomb(8000, 8000), "big.png")


def test_a_truncated_jpeg_is_refused() -> None:
    data = encoded(Image.effect_noise((256, 256), 60).convert("RGB"), "JPEG", quality=90)
    with pytest.raises(UserError, match="`cut.jpg` is damaged or cut short"):
        decode_picture(data[: len(data) // 2], "cut.jpg")


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    upright = decode_picture(encoded(image, "JPEG", exif=exif), "phone.jpg")
    assert upright.size == (48, 88)  # stored 2:1 wide, shown 1:2 tall


def test_alpha_is_flattened_onto_white() -> None:
    clear = Image.new("RGBA", (16, 16), (255, 0, 0, 0))
    picture = decode_picture(encoded(clear, "PNG"), "clear.png")
    assert picture.mode == "RGB" and picture.getpixel((8, 8)) == (255, 255, 255)


def test_a_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (16, 16), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    data = encoded(frames[0], "GIF", save_all=True, append_images=frames[1:])
    red, _, blue = decode_picture(data, "anim.gif").getpixel((8, 8))
    assert red > 200 and blue < 50


def test_webp_is_accepted() -> None:
    assert decode_picture(encoded(Image.new("RGB", (24, 16)), "WEBP"), "x.webp").size == (80, 56)


def test_an_extreme_aspect_is_refused() -> None:
    with pytest.raises(UserError, match=r"`strip.png` is 500×100; pictures may be at most 4:1"):
        decode_picture(encoded(Image.new("RGB", (500, 100)), "PNG"), "strip.png")


def test_leading_urls_are_split_from_the_prompt() -> None:
    urls, text = split_leading_urls("https://a/x.png <https://b/y.png> a red fox --iw 2")
    assert urls == ["https://a/x.png", "https://b/y.png"] and text == "a red fox --iw 2"
    assert split_leading_urls("a fox at https://a/x.png") == ([], "a fox at https://a/x.png")


def test_only_discord_attachment_urls_name_an_attachment() -> None:
    assert attachment_ref("https://cdn.discordapp.com/attachments/12/34/cat.png?ex=1&is=2&hm=3") == (12, 34)
    assert attachment_ref("https://media.discordapp.net/attachments/12/34/cat.png") == (12, 34)
    assert attachment_ref("https://example.com/attachments/12/34/cat.png") is None
    assert attachment_ref("https://cdn.discordapp.com.evil.net/attachments/12/34/cat.png") is None
    assert attachment_ref("https://cdn.discordapp.com/avatars/12/34.png") is None
    assert attachment_ref("file:///etc/passwd") is None
    hosts = cdn_hosts_for("http://127.0.0.1:5000/api/v10")
    assert attachment_ref("http://127.0.0.1:5000/attachments/0/34/cat.png", hosts) == (0, 34)


def test_the_refusals_read_well_in_discord() -> None:
    # A member's filename cannot break out of its code span.
    with pytest.raises(UserError) as refused:
        decode_picture(b"nope", "a`**bold**`.png")
    assert str(refused.value).startswith("`a'**bold**'.png` isn't")


def test_a_jobs_pictures_are_recorded_with_its_spec() -> None:
    from bot.spec import InputImage, JobSpec, RenderSpec

    spec = JobSpec(
        render=RenderSpec(prompt=""), inputs=(InputImage(path="inputs/ab.png", name="a.png", width=72, height=56),)
    )
    assert JobSpec.from_json(spec.to_json()) == spec
    assert JobSpec.from_json(JobSpec(render=RenderSpec(prompt="x")).to_json()).inputs == ()  # older rows have none
