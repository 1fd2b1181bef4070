"""Clip delivery: what Discord gets for a clip, MP4 (H.264) against the animated WebP fallback and
our stored animated PNG, and what fitting a small upload limit costs (frame rate, then side).

    .venv/bin/python -m bench.clip_bench --repeats 5

Side by side in one run, on the shipped model's clip shape (16 frames of 64 px, enlarged to 256 px
for the player) and on a Wan-sized one (81 frames of 480×832, as VIDEO_MODEL draws).
"""

from __future__ import annotations

import argparse
import io
import math
import statistics
import time
from collections.abc import Callable

from PIL import Image

from bot import clip_files
from bot.clip_files import Clip, decode_clip, encode_clip_for_upload
from engine.training.dataset import Scene, render


def sliding_circle(frames: int, size: tuple[int, int]) -> Clip:
    """A red circle crossing a blue picture (the drawer of the shipped model's training set)."""
    clip = []
    for i in range(frames):
        shift = round(-12 + 24 * i / (frames - 1))
        clip.append(render(Scene("circle", "red", "blue", "medium", "center", shift, 0)).resize(size))
    return Clip(tuple(clip), fps=8 if frames <= 32 else 16)


def timed(repeats: int, work: Callable[[], bytes]) -> tuple[float, int]:
    times, size = [], 0
    for _ in range(repeats):
        started = time.perf_counter()
        size = len(work())
        times.append(time.perf_counter() - started)
    return statistics.median(times), size


def apng(clip: Clip) -> bytes:
    buffer = io.BytesIO()
    first, *rest = clip.frames
    first.save(buffer, format="PNG", save_all=True, append_images=rest, duration=round(1000 / clip.fps), loop=0)
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    for name, clip in (
        ("shipped, 16×64 px", sliding_circle(16, (64, 64))),
        ("Wan-sized, 81×832×480", sliding_circle(81, (832, 480))),
    ):
        mp4_s, mp4 = timed(args.repeats, lambda c=clip: encode_clip_for_upload(c, "x")[0])
        h264 = clip_files.h264_available
        clip_files.h264_available = lambda: False  # the fallback, as on a host without libx264
        try:
            webp_s, webp = timed(args.repeats, lambda c=clip: encode_clip_for_upload(c, "x")[0])
        finally:
            clip_files.h264_available = h264
        png_s, png = timed(args.repeats, lambda c=clip: apng(c))
        print(
            f"{name}: MP4 {mp4 / 1024:.1f} KiB in {mp4_s:.3f} s; WebP {webp / 1024:.1f} KiB in {webp_s:.3f} s "
            f"(WebP/MP4 {webp / mp4:.2f}x); stored APNG {png / 1024:.1f} KiB ({png / mp4:.2f}x MP4)"
        )
        for share in (2, 8, 32):
            limit = math.ceil(mp4 / share)
            data, _ = encode_clip_for_upload(clip, "x", limit=limit)
            back = decode_clip(data)
            print(
                f"  limit 1/{share} of it: {len(data) / limit:.2f} of the limit, {len(back.frames)} frames at "
                f"{back.fps:g} fps, {back.frames[0].width}×{back.frames[0].height}"
            )


if __name__ == "__main__":
    Image.init()
    main()
