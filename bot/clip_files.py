"""Clips: our stored copy (an animated PNG, lossless, its first frame the picture every image path
sees) and what Discord plays: an MP4 (H.264, yuv420p) that fits the channel's upload limit, or an
animated WebP where no H.264 encoder is installed.

A clip over the limit is made to fit, never refused: first a lower quality, then fewer frames a
second (every other frame, the same length in seconds), then a smaller frame; a limit too small for
any clip gets its first frame, as a picture.
"""

from __future__ import annotations

import io
import logging
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image, ImageSequence

from bot.image_files import DEFAULT_UPLOAD_LIMIT, encode_for_upload

log = logging.getLogger(__name__)

SHOWN_SIDE = 256  # a clip smaller than this (the shipped model's are 64 px) is enlarged for the player
MIN_FPS = 4  # dropping frames stops here; the frame gets smaller instead
MIN_SIDE = 64  # and smaller stops here: the smallest clip we send
MP4_CRFS = (23, 30, 38)  # x264's default quality, then lower ones
WEBP_QUALITIES = (80, 60, 40)


@dataclass(frozen=True, slots=True)
class Clip:
    frames: tuple[Image.Image, ...]
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps if self.fps else 0.0


def save_clip(clip: Clip, path: Path) -> None:
    """An animated PNG at `clip.fps`; written beside and renamed, so a crash leaves no half a clip."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    first, *rest = (frame.convert("RGB") for frame in clip.frames)
    first.save(
        tmp,
        format="PNG",
        save_all=True,
        append_images=rest,
        duration=round(1000 / clip.fps),
        loop=0,
        default_image=False,
    )
    tmp.replace(path)


def load_clip(path: Path) -> Clip:
    """Every frame of a stored clip, and its rate (a still picture is a clip of one frame)."""
    with Image.open(path) as image:
        duration = float(image.info.get("duration") or 125)
        frames = tuple(frame.convert("RGB") for frame in ImageSequence.Iterator(image))
    return Clip(frames, fps=round(1000 / duration, 3))


def h264_available() -> bool:
    """Whether PyAV and its FFmpeg's libx264 are installed (the PyPI wheels bundle it)."""
    try:
        import av
    except ImportError:
        return False
    return "libx264" in av.codecs_available


def encode_clip_for_upload(clip: Clip, stem: str, limit: int = DEFAULT_UPLOAD_LIMIT) -> tuple[bytes, str]:
    """The clip as Discord plays it, within `limit` bytes: (data, filename).

    MP4 when H.264 can be written here, else animated WebP. Over the limit: lower qualities, then
    half the frame rate (down to MIN_FPS), then three quarters of the side (down to MIN_SIDE), as
    often as it takes; below all of that, the first frame as a picture (which always fits).
    """
    frames = _shown(clip.frames)
    fps = clip.fps
    h264 = h264_available()
    suffix = "mp4" if h264 else "webp"
    qualities = MP4_CRFS if h264 else WEBP_QUALITIES
    while True:
        for quality in qualities:
            data = _mp4(frames, fps, quality) if h264 else _webp(frames, fps, quality)
            if len(data) <= limit:
                return data, f"{stem}.{suffix}"
        if fps / 2 >= MIN_FPS and len(frames) > 2:
            frames, fps = frames[::2], fps / 2
        elif max(frames[0].size) * 3 // 4 >= MIN_SIDE:
            frames = [_resize(frame, 3 / 4) for frame in frames]
        else:
            log.warning("clip %s does not fit %d bytes at its smallest; sending its first frame", stem, limit)
            return encode_for_upload(clip.frames[0], stem, limit)


def _shown(frames: Sequence[Image.Image]) -> list[Image.Image]:
    """Frames enlarged to SHOWN_SIDE if smaller, in even sides (H.264's yuv420p halves chroma both ways)."""
    width, height = frames[0].size
    scale = max(1.0, SHOWN_SIDE / max(width, height))
    return [_resize(frame, scale) for frame in frames]


def _resize(frame: Image.Image, scale: float) -> Image.Image:
    width, height = (max(2, round(side * scale) // 2 * 2) for side in frame.size)
    if (width, height) == frame.size:
        return frame
    return frame.resize((width, height), Image.Resampling.LANCZOS)


def _mp4(frames: Sequence[Image.Image], fps: float, crf: int) -> bytes:

    rate = Fraction(fps).limit_denominator(1000)
    # A real file: +faststart (the index first, so Discord's player starts before the download ends)
    # rewrites the file at the end, which a BytesIO cannot be reopened for.
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "clip.mp4"
        _write_mp4(path, frames, rate, crf)
        return path.read_bytes()


def _write_mp4(path: Path, frames: Sequence[Image.Image], rate: Fraction, crf: int) -> None:
    import av

    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height = frames[0].size
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": str(crf), "preset": "veryfast"}
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_image(frame.convert("RGB"))):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _webp(frames: Sequence[Image.Image], fps: float, quality: int) -> bytes:
    buffer = io.BytesIO()
    first, *rest = frames
    duration = round(1000 / fps)
    first.save(
        buffer, format="WEBP", save_all=True, append_images=rest, duration=duration, loop=0, quality=quality, method=4
    )
    return buffer.getvalue()


def decode_clip(data: bytes) -> Clip:
    """An uploaded clip read back (MP4 through PyAV, WebP/GIF through Pillow), as a player shows it."""
    if data[4:8] == b"ftyp":
        import av

        with av.open(io.BytesIO(data), mode="r") as container:
            stream = container.streams.video[0]
            fps = float(stream.average_rate or stream.base_rate or 0)
            played = tuple(frame.to_image() for frame in container.decode(stream))
        return Clip(played, fps)
    frames: list[Image.Image] = []
    durations: list[float] = []
    with Image.open(io.BytesIO(data)) as image:
        for frame in ImageSequence.Iterator(image):  # WebP says each frame's duration once it is read
            frames.append(frame.convert("RGB"))
            durations.append(float(frame.info.get("duration") or 100))
    return Clip(tuple(frames), round(1000 / statistics.median(durations), 3))
