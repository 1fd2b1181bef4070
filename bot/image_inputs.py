"""Members' own pictures: the one door every image input comes through.

/upscale, /variation, `/imagine image:`, the Apps menu actions (and later /blend, /describe and
the edit loop) all take a picture from a member. Whatever the source, the same rules hold:

- only attachments Discord hands the bot are read: an option's upload, the target of a message
  command, or a Discord attachment URL leading a prompt that Discord itself resolves for us. A URL
  a member typed is never fetched (it could point anywhere, including inside our own network);
- the declared size is checked against the upload limit before a byte is downloaded;
- the content is sniffed by Pillow, not trusted from the filename or content type, and only PNG,
  JPEG, WebP and GIF (first frame) are opened, under a pixel cap checked from the header, so a
  decompression bomb is refused before it is decoded;
- EXIF orientation is applied, transparency flattened onto white, and the picture fitted to the
  model's pixel budget keeping its aspect (sides multiples of 8);
- our own copy is stored under DATA_DIR (content-addressed), because Discord's CDN links expire:
  buttons, /show, redraws and crash recovery read that copy.

Every refusal is a `UserError` with one short line saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import re
import warnings
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import discord
from PIL import Image, ImageOps, UnidentifiedImageError

from bot.errors import UserError
from bot.image_files import save_png
from bot.spec import InputImage
from engine.params import size_for_aspect

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF")
MAX_INPUT_PIXELS = 50_000_000  # about 7000×7000; larger pictures are refused from their header
MAX_ASPECT = 4  # at most 4:1 either way, as `--ar`
SIZE_MULTIPLE = 8  # diffusers needs sides divisible by 8
DISCORD_CDN_HOSTS = frozenset({"cdn.discordapp.com", "media.discordapp.net"})
_ATTACHMENT_PATH = re.compile(r"^/attachments/(?P<channel>\d+)/(?P<attachment>\d+)/[^/]+$")
_LEADING_URL = re.compile(r"^<?(https?://\S+?)>?(?:\s+|$)")
HISTORY_SCAN = 50  # recent messages searched for an attachment a prompt links to


def _size(n: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


def shown_name(filename: str) -> str:
    """A member's filename as a code span: nothing in it can format the line or break out."""
    return "`" + filename.replace("`", "'")[:80] + "`"


# -- decoding (pure; runs in a thread) -----------------------------------------------------------


def decode_picture(data: bytes, filename: str) -> Image.Image:
    """The first frame of a PNG/JPEG/WebP/GIF as RGB, upright, alpha flattened onto white."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (and only errors at 2x its global cap); a bomb is a refusal either way.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if width * height > MAX_INPUT_PIXELS:
                    raise UserError(
                        f"{shown_name(filename)} is {width}×{height} pixels; pictures may have at most "
                        f"{MAX_INPUT_PIXELS // 1_000_000} megapixels."
                    )
                image.seek(0)  # an animation's first frame
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _flatten(upright)
    except UserError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise UserError(
            f"{shown_name(filename)} is too large to decode; pictures may have at most "
            f"{MAX_INPUT_PIXELS // 1_000_000} megapixels."
        ) from None
    except UnidentifiedImageError:
        raise UserError(f"{shown_name(filename)} isn't a PNG, JPEG, WebP or GIF picture.") from None
    except (OSError, SyntaxError, ValueError, EOFError):
        # Pillow's words for truncated or corrupt data ("image file is truncated", "broken data stream").
        raise UserError(f"{shown_name(filename)} is damaged or cut short; try uploading it again.") from None


def _flatten(image: Image.Image) -> Image.Image:
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB")


def fit_to_budget(image: Image.Image, pixel_budget: int, filename: str = "the picture") -> Image.Image:
    """Resize to about `pixel_budget` pixels keeping the aspect, both sides multiples of 8."""
    width, height = image.size
    if max(width, height) > MAX_ASPECT * min(width, height):
        raise UserError(
            f"{shown_name(filename)} is {width}×{height}; pictures may be at most {MAX_ASPECT}:1 wide or tall."
        )
    size = size_for_aspect(width, height, pixel_budget, SIZE_MULTIPLE)
    return image if image.size == size else image.resize(size, Image.Resampling.LANCZOS)


def store_input(image: Image.Image, data_dir: Path) -> str:
    """Save our copy (named by its content, so the same picture is stored once); returns its path."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    relative = f"inputs/{hashlib.sha256(buffer.getvalue()).hexdigest()[:32]}.png"
    if not (data_dir / relative).exists():
        save_png(image, data_dir / relative)
    return relative


# -- attachments ---------------------------------------------------------------------------------


async def read_attachment(
    attachment: discord.Attachment, *, upload_limit: int, pixel_budget: int, data_dir: Path
) -> InputImage:
    """Check, download, decode, fit and store a picture Discord handed us."""
    if attachment.size > upload_limit:
        raise UserError(
            f"{shown_name(attachment.filename)} is {_size(attachment.size)}; "
            f"pictures may be up to {_size(upload_limit)} here."
        )
    try:
        data = await attachment.read()
    except discord.HTTPException:
        raise UserError(
            f"I couldn't download {shown_name(attachment.filename)} from Discord; try uploading it again."
        ) from None
    if len(data) > upload_limit:  # the CDN sent more than Discord declared
        raise UserError(f"{shown_name(attachment.filename)} is larger than the {_size(upload_limit)} allowed here.")
    return await asyncio.to_thread(_decode_fit_store, data, attachment.filename, pixel_budget, data_dir)


def _decode_fit_store(data: bytes, filename: str, pixel_budget: int, data_dir: Path) -> InputImage:
    """The blocking part of reading a picture, for one trip to a worker thread."""
    fitted = fit_to_budget(decode_picture(data, filename), pixel_budget, filename)
    path = store_input(fitted, data_dir)
    return InputImage(path=path, name=filename, width=fitted.width, height=fitted.height)


async def read_for_interaction(
    interaction: discord.Interaction, attachment: discord.Attachment, *, pixel_budget: int, data_dir: Path
) -> InputImage:
    """`read_attachment` inside a command, with the member told what happens.

    Downloading and decoding may outlast Discord's 3 s, so the interaction is deferred ephemerally
    first: a refusal then lands in that placeholder, one line only the member sees. On success the
    placeholder becomes a short note, and the job's own (public) message is the next follow-up.
    A command that already deferred publicly (/imagine) keeps its placeholder for the job's message.
    """
    deferred_here = not interaction.response.is_done()
    if deferred_here:
        await interaction.response.defer(ephemeral=True, thinking=True)
    stored = await read_attachment(
        attachment, upload_limit=interaction.filesize_limit, pixel_budget=pixel_budget, data_dir=data_dir
    )
    if deferred_here:
        await interaction.edit_original_response(
            content=f"Using your picture {shown_name(stored.name)}, fitted to {stored.width}×{stored.height}."
        )
    return stored


def image_attachments(message: discord.Message) -> list[discord.Attachment]:
    """A message's attachments that claim to be pictures (the claim is checked when read)."""
    suffixes = (".png", ".jpg", ".jpeg", ".webp", ".gif")
    return [
        a
        for a in message.attachments
        if (a.content_type or "").startswith("image/") or a.filename.lower().endswith(suffixes)
    ]


# -- image URLs leading a prompt ---------------------------------------------------------------


def split_leading_urls(prompt: str) -> tuple[list[str], str]:
    """Midjourney's image prompts: URLs at the very start of the prompt, then the text."""
    urls: list[str] = []
    rest = prompt.lstrip()
    while match := _LEADING_URL.match(rest):
        urls.append(match.group(1))
        rest = rest[match.end() :]
    return urls, rest


def attachment_ref(url: str, cdn_hosts: frozenset[str] = DISCORD_CDN_HOSTS) -> tuple[int, int] | None:
    """(channel_id, attachment_id) of a Discord attachment URL; None for any other URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or parts.netloc.lower() not in cdn_hosts:
        return None
    match = _ATTACHMENT_PATH.match(parts.path)
    if match is None:
        return None
    return int(match["channel"]), int(match["attachment"])


def cdn_hosts_for(api_base: str | None) -> frozenset[str]:
    """Discord's CDN hosts, plus the API's host (a proxy, or the tests' fake, set by DISCORD_API_BASE)."""
    if not api_base:
        return DISCORD_CDN_HOSTS
    return DISCORD_CDN_HOSTS | {urlsplit(api_base).netloc.lower()}


async def resolve_prompt_url(
    interaction: discord.Interaction,
    url: str,
    *,
    attached: Sequence[discord.Attachment] = (),
    cdn_hosts: frozenset[str] = DISCORD_CDN_HOSTS,
) -> discord.Attachment:
    """The attachment a prompt's leading URL names, as Discord hands it to us.

    The URL itself is never fetched: it only names an attachment, which must be one the
    interaction carries (`attached`: its options' uploads) or one on a recent message in this
    channel (read through Discord's API, which gives the attachment's real size and a fresh link).
    """
    ref = attachment_ref(url, cdn_hosts)
    shown = url if len(url) <= 80 else url[:79] + "…"
    if ref is None:
        raise UserError(
            f"<{shown}> isn't a picture posted on Discord. I only read pictures posted here: "
            "use the `image` option to upload it."
        )
    channel_id, attachment_id = ref
    for attachment in attached:
        if attachment.id == attachment_id:
            return attachment
    channel = interaction.channel
    if channel_id == interaction.channel_id and isinstance(channel, discord.abc.Messageable):
        try:
            async for message in channel.history(limit=HISTORY_SCAN):
                for attachment in message.attachments:
                    if attachment.id == attachment_id:
                        return attachment
        except discord.HTTPException:
            pass
    raise UserError(
        f"I can't find the picture <{shown}> among the recent messages of this channel; "
        "use the `image` option to upload it."
    )
