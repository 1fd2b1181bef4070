"""Members' own pictures: the one door every image input comes through.

/upscale, /variation, `/imagine image:`, the Apps menu actions (and later /blend, /describe and
the edit loop) all take a picture from a member. Whatever the source, the same rules hold:

- only attachments Discord hands the bot are read: an option's upload, the target of a message
  command, or a Discord attachment URL leading a prompt that Discord itself resolves for us. A URL
  a member typed is never fetched (it could point anywhere, including inside our own network);
- the declared size is checked against the upload limit before a byte is downloaded;
- the bytes are decoded in a child process (`bot.picture_decoder`) with a deadline, a memory cap
  and a low priority, a few at a time and at most a /blend's worth per member, so no file, however
  it is built, can hold the bot's threads, its memory or its cores. There the content is sniffed
  (never trusted from the filename or content type), only PNG, JPEG, WebP and GIF (first frame)
  are opened, and every rule the header can answer (pixel count, aspect, scans, frames) is
  answered before a pixel is decoded;
- EXIF orientation is applied, every colour mode converted to RGB (alpha flattened onto white,
  16-bit scaled), and the picture fitted to the model's pixel budget keeping its aspect (sides
  multiples of 8), with memory for the pixels kept rather than the pixels declared;
- our own copy is stored under DATA_DIR (content-addressed), because Discord's CDN links expire:
  buttons, /show, redraws and crash recovery read that copy. It is a fresh PNG of the fitted
  pixels and nothing else: no metadata, no trailing bytes, no second format.

Every refusal is a `UserError` with one short line saying why.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import discord
from PIL import Image

from bot import picture_decoder
from bot.errors import UserError
from bot.picture_decoder import Refused, fit_picture
from bot.spec import InputImage

log = logging.getLogger(__name__)

_DECODER = Path(picture_decoder.__file__).resolve()
DECODES_AT_ONCE = 2  # child processes decoding at once, bot-wide (more would only share the cores)
PICTURES_PER_MEMBER = 5  # pictures one member may have downloading and decoding at once: one /blend
DECODE_CPU_S = 4  # CPU seconds one picture may take (the kernel kills the child past it): 50 MP takes ~1
DECODE_TIMEOUT_S = 20.0  # wall clock, start to finish: a lower-priority child may wait for busy cores
DECODE_MEMORY_BYTES = 1 << 30  # the child's address space: a 50 MP picture's buffers fit, a bomb's don't
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


# -- decoding (in a child process: bot.picture_decoder) ------------------------------------------


@dataclass(frozen=True)
class Decoded:
    """A picture as the child made it: a fresh PNG of the fitted pixels, and what it cost."""

    png: bytes
    width: int
    height: int
    peak_bytes: int  # the child's own high-water mark of resident memory


class PictureReader:
    """Decodes members' pictures in child processes: a few at a time, a few per member, each bounded.

    Each picture gets a fresh `python -I bot/picture_decoder.py` (about 60 ms to start): its CPU
    time is capped at `cpu_s` and its address space at `memory_bytes` (the kernel enforces both),
    it runs at a lower priority than the bot, and it is killed at `timeout_s` of wall clock.
    Waiting for it holds no thread, so a picture can't take the threads that save, encode and
    deliver other members' results, and its memory is never the bot's. `reserve` keeps one member
    from queueing more than `per_member` pictures at once (one /blend's worth).
    """

    def __init__(
        self,
        *,
        at_once: int = DECODES_AT_ONCE,
        per_member: int = PICTURES_PER_MEMBER,
        timeout_s: float = DECODE_TIMEOUT_S,
        cpu_s: int = DECODE_CPU_S,
        memory_bytes: int = DECODE_MEMORY_BYTES,
    ) -> None:
        self.per_member = per_member
        self.timeout_s = timeout_s
        self.cpu_s = cpu_s
        self.memory_bytes = memory_bytes
        self._slots = asyncio.Semaphore(at_once)
        self._reading: Counter[int] = Counter()

    @contextmanager
    def reserve(self, member_id: int, count: int = 1) -> Iterator[None]:
        """Hold `count` of the member's picture slots while their pictures are downloaded and read."""
        if self._reading[member_id] + count > self.per_member:
            raise UserError(
                f"I'm still reading {self._reading[member_id]} of your pictures; "
                "wait for them to finish, then try again."
            )
        self._reading[member_id] += count
        try:
            yield
        finally:
            self._reading[member_id] -= count
            if self._reading[member_id] <= 0:
                del self._reading[member_id]

    async def decode(self, data: bytes, filename: str, pixel_budget: int) -> Decoded:
        """The fitted pixels as PNG, or a UserError saying why not."""
        request = {
            "pixel_budget": pixel_budget,
            "memory_bytes": self.memory_bytes,
            "cpu_seconds": self.cpu_s,
        }
        async with self._slots:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-I",
                str(_DECODER),
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            try:
                out, err = await asyncio.wait_for(
                    proc.communicate(json.dumps(request).encode() + b"\n" + data), self.timeout_s
                )
            except TimeoutError:
                log.warning("decoding %r took over %.1f s: killed", filename, self.timeout_s)
                raise UserError(
                    f"{shown_name(filename)} takes too long to decode; re-save it as an ordinary PNG or JPEG."
                ) from None
            finally:
                if proc.returncode is None:
                    proc.kill()
                    await proc.wait()
        status, _, body = out.partition(b"\n")
        if status == b"refused":
            raise UserError(body.decode(errors="replace").replace("{name}", shown_name(filename)))
        fields = status.split()
        if proc.returncode != 0 or len(fields) != 4 or fields[0] != b"ok":
            # Killed for CPU (SIGXCPU) or memory, or a crash in a decoder: the member's picture either way.
            log.warning(
                "decoding %r failed (exit %s): %s", filename, proc.returncode, err[-500:].decode(errors="replace")
            )
            raise UserError(f"{shown_name(filename)} can't be decoded within the memory and time a picture may use.")
        decoded = Decoded(png=body, width=int(fields[1]), height=int(fields[2]), peak_bytes=int(fields[3]))
        log.debug(
            "decoded %r to %d×%d; the child's peak %d MiB",
            filename,
            decoded.width,
            decoded.height,
            decoded.peak_bytes >> 20,
        )
        return decoded


def decode_picture(data: bytes, filename: str, pixel_budget: int = 64 * 64) -> Image.Image:
    """What the child does, in this process: for tests and tools, with refusals as UserError."""
    try:
        return fit_picture(data, pixel_budget)
    except Refused as refused:
        raise UserError(str(refused).replace("{name}", shown_name(filename))) from None


def store_input(png: bytes, data_dir: Path) -> str:
    """Save our copy (named by its content, so the same picture is stored once); returns its path."""
    relative = f"inputs/{hashlib.sha256(png).hexdigest()[:32]}.png"
    path = data_dir / relative
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_bytes(png)
        tmp.replace(path)  # never leave a half-written picture behind a crash
    return relative


# -- attachments ---------------------------------------------------------------------------------


async def read_attachment(
    attachment: discord.Attachment, *, reader: PictureReader, upload_limit: int, pixel_budget: int, data_dir: Path
) -> InputImage:
    """Check, download, decode, fit and store a picture Discord handed us.

    The caller holds `reader.reserve` for the member (read_for_interaction does).
    """
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
    decoded = await reader.decode(data, attachment.filename, pixel_budget)
    path = await asyncio.to_thread(store_input, decoded.png, data_dir)
    return InputImage(path=path, name=attachment.filename, width=decoded.width, height=decoded.height)


async def read_attachments(
    attachments: Sequence[discord.Attachment],
    *,
    member_id: int,
    reader: PictureReader,
    upload_limit: int,
    pixel_budget: int,
    data_dir: Path,
) -> list[InputImage]:
    """Several pictures of one member's command, read side by side (/blend).

    The first refusal is the one the member sees, and it stops the others' downloads and decodes.
    """
    with reader.reserve(member_id, len(attachments)):
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(
                        read_attachment(
                            attachment,
                            reader=reader,
                            upload_limit=upload_limit,
                            pixel_budget=pixel_budget,
                            data_dir=data_dir,
                        )
                    )
                    for attachment in attachments
                ]
        except* UserError as refused:
            raise refused.exceptions[0] from None
    return [task.result() for task in tasks]


async def read_for_interaction(
    interaction: discord.Interaction,
    attachment: discord.Attachment,
    *,
    reader: PictureReader,
    pixel_budget: int,
    data_dir: Path,
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
    with reader.reserve(interaction.user.id):
        stored = await read_attachment(
            attachment,
            reader=reader,
            upload_limit=interaction.filesize_limit,
            pixel_budget=pixel_budget,
            data_dir=data_dir,
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
