"""Clips as we store them and as Discord gets them: MP4 (or WebP) within the upload limit, read back."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from bot import clip_files
from bot.clip_files import Clip, decode_clip, encode_clip_for_upload, load_clip, save_clip


def noisy_clip(frames: int = 32, side: int = 128, fps: float = 16) -> Clip:
    return Clip(tuple(Image.effect_noise((side, side), 80).convert("RGB") for _ in range(frames)), fps=fps)


def test_a_stored_clip_keeps_every_frame_and_its_rate_and_opens_as_its_first_frame(tmp_path: Path):
    clip = Clip(tuple(Image.new("RGB", (64, 48), (i * 20, 0, 0)) for i in range(12)), fps=8)
    path = tmp_path / "images" / "7" / "1.png"
    save_clip(clip, path)
    back = load_clip(path)
    assert len(back.frames) == 12 and back.fps == 8 and back.seconds == 1.5
    assert [f.getpixel((0, 0)) for f in back.frames] == [f.getpixel((0, 0)) for f in clip.frames]
    with Image.open(path) as picture:  # every image path (load_rgb, ✉️, a Vary of it) sees the first frame
        assert picture.convert("RGB").getpixel((0, 0)) == (0, 0, 0)
    assert not path.with_suffix(".tmp").exists()


def test_the_mp4_plays_back_every_frame_at_its_rate_enlarged_for_the_player():
    data, name = encode_clip_for_upload(noisy_clip(frames=16, side=64, fps=8), "dreamgrid-3")
    assert name == "dreamgrid-3.mp4" and data[4:8] == b"ftyp"
    back = decode_clip(data)
    assert len(back.frames) == 16 and back.fps == 8 and back.frames[0].size == (256, 256)


def test_over_the_limit_a_clip_is_made_to_fit_not_refused():
    clip = noisy_clip()
    full, _ = encode_clip_for_upload(clip, "x")
    for share in (3, 20):
        data, name = encode_clip_for_upload(clip, "x", limit=len(full) // share)
        assert name == "x.mp4" and len(data) <= len(full) // share
        back = decode_clip(data)
        assert back.seconds == clip.seconds  # fewer frames a second, the same length
        assert back.fps < 16 or back.frames[0].width < 256 or share == 3
    # No clip fits a few hundred bytes: the member gets its first frame as a picture.
    data, name = encode_clip_for_upload(Clip(clip.frames[:4], 16), "x", limit=2_000)
    assert name.endswith((".png", ".webp")) and len(data) <= 2_000


def test_without_h264_the_clip_is_an_animated_webp(monkeypatch):
    monkeypatch.setattr(clip_files, "h264_available", lambda: False)
    data, name = encode_clip_for_upload(noisy_clip(frames=8, side=64, fps=8), "x")
    assert name == "x.webp"
    back = decode_clip(data)
    assert len(back.frames) == 8 and back.fps == 8
