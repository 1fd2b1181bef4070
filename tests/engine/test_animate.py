"""Animate on the engine: an operator's image-to-video pipeline (tiny Wan- and LTX-shaped ones built
from config, the same code path as a VIDEO_MODEL folder), the shipped motion model's path on a tiny
UNet, and the refusals the bot reads before it queues."""

from __future__ import annotations

import pytest
from PIL import Image

from engine.requests import Action, Feature, RenderError, RenderRequest

START = Image.new("RGB", (32, 32), (220, 30, 30))


def clip_request(**overrides) -> RenderRequest:
    base = dict(
        action=Action.ANIMATE, prompt="a red circle", seeds=(3,), width=32, height=32, steps=2,
        guidance_scale=1.0, init_image=START, strength=0.85,
    )  # fmt: skip
    base.update(overrides)
    return RenderRequest(**base)


@pytest.fixture(params=["wan", "ltx"])
async def video_engine(request, tiny_pipe):
    from engine.core import DiffusersEngine
    from engine.tiny import TINY_VIDEO_BUILDERS
    from engine.video import VideoSettings

    pipe = TINY_VIDEO_BUILDERS[request.param]()
    async with DiffusersEngine(
        model="tiny",
        pipelines={"tiny": tiny_pipe},
        device="cpu",
        batch_window_s=0.0,
        video=VideoSettings(frames=9),
        video_pipeline=pipe,
    ) as engine:
        yield request.param, engine


async def test_an_image_to_video_pipeline_draws_a_clip_that_starts_on_the_picture(video_engine):
    name, engine = video_engine
    steps = []
    result = await engine.render(clip_request(), progress=lambda event: steps.append(event.step))
    (clip,) = result.clips
    assert len(clip) == 9 and all(frame.size == (32, 32) for frame in clip)
    assert result.images == (clip[0],) and result.seeds == (3,)
    assert result.fps == {"wan": 16, "ltx": 24}[name]
    assert steps == [1, 2] and result.elapsed_s > 0


async def test_an_end_frame_is_drawn_where_the_pipeline_takes_one_and_refused_elsewhere(video_engine):
    name, engine = video_engine
    reason = engine.supports(None, Feature.END_FRAME)
    if name == "wan":  # WanImageToVideoPipeline takes a last_image
        assert reason is None
        result = await engine.render(clip_request(loop=True))
        assert len(result.clips[0]) == 9
    else:
        assert reason == (
            "LTX-Video clips cannot end on a chosen picture (`end`, --loop): its pipeline takes a first frame only"
        )
        with pytest.raises(RenderError, match="cannot end on a chosen picture"):
            await engine.render(clip_request(end_image=START))


async def test_without_a_video_model_animate_is_refused_saying_how_to_enable_it(engine):
    reason = engine.supports(None, Action.ANIMATE)
    assert reason is not None and "VIDEO_MODEL" in reason  # the tiny random UNet is not the shipped one
    with pytest.raises(RenderError, match="VIDEO_MODEL"):
        await engine.render(clip_request())


def test_the_motion_path_holds_the_first_and_end_frames_to_their_pictures(tiny_pipe):
    """The shipped motion model's code path, on the tiny random UNet with a fresh adapter: a clip of
    the asked frames whose first frame is the picture's and last the end picture's (as decoded)."""
    import torch

    from engine.actions.animate import animate
    from engine.motion import new_adapter
    from engine.preview import fit_latent_rgb
    from engine.video import MOTION, VideoModel

    torch.manual_seed(0)
    video = VideoModel(tiny_pipe, MOTION, new_adapter(tiny_pipe.unet), fit_latent_rgb(tiny_pipe.vae))
    end = Image.new("RGB", (64, 64), (30, 70, 230))
    previews = []

    def report(step, total, preview):
        previews.append(preview)
        return False

    frames = animate(video, clip_request(width=64, height=64, steps=4, frames=16, end_image=end), report)
    assert len(frames) == 16 and frames[0].size == (64, 64)
    assert len(previews) == 3 and all(p is not None for p in previews)  # int(4 * 0.85) steps

    # The random VAE's colours are its own: compare with what it makes of each picture.
    def through_vae(picture: Image.Image) -> torch.Tensor:
        from engine.actions.animate import _pixels
        from engine.vae import decode_latents, encode_pixels

        pixels = _pixels(picture, 64, 64, torch.device("cpu"))
        return decode_latents(tiny_pipe.vae, encode_pixels(tiny_pipe.vae, pixels))[0]

    def distance(frame: Image.Image, reference: torch.Tensor) -> float:
        from engine.actions.animate import _pixels

        return float((_pixels(frame, 64, 64, torch.device("cpu"))[0] - reference.clamp(-1, 1)).abs().mean())

    red, blue = through_vae(START), through_vae(end)
    assert distance(frames[0], red) < distance(frames[0], blue) / 2
    assert distance(frames[-1], blue) < distance(frames[-1], red) / 2


def test_clip_lengths_follow_each_family(tiny_pipe):
    from engine.video import MOTION, clip_frames, family_of_class

    wan, ltx = family_of_class("WanImageToVideoPipeline"), family_of_class("LTXImageToVideoPipeline")
    assert wan is not None and ltx is not None
    assert clip_frames(wan) == 81 and clip_frames(ltx) == 121  # 5 s at 16 and 24 fps, as 1 + 4k and 1 + 8k
    assert clip_frames(wan, 10) == 9 and clip_frames(MOTION) == 16
    assert family_of_class("StableDiffusionPipeline") is None


async def test_a_video_model_folder_is_recognised_from_its_config_and_loaded(tmp_path, tiny_pipe):
    """VIDEO_MODEL as an operator sets it: a diffusers folder, answered from model_index.json before
    loading (the bot asks before it queues), loaded offline on the first clip."""
    from engine.core import DiffusersEngine
    from engine.tiny import TINY_VIDEO_BUILDERS
    from engine.video import VideoSettings

    folder = tmp_path / "wan"
    TINY_VIDEO_BUILDERS["wan"]().save_pretrained(folder)
    settings = VideoSettings(source=str(folder), frames=5)
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", video=settings) as engine:
        assert engine.supports(None, Action.ANIMATE) is None and engine.supports(None, Feature.END_FRAME) is None
        result = await engine.render(clip_request(end_image=START))
        assert len(result.clips[0]) == 5 and result.fps == 16

    (folder / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", video=settings) as engine:
        assert engine.supports(None, Action.ANIMATE) == (
            "VIDEO_MODEL is a StableDiffusionPipeline, not an image-to-video pipeline (WanImageToVideo, "
            "LTXImageToVideo, LTXPipeline, LTX2ImageToVideo, CogVideoXImageToVideo, StableVideoDiffusion, I2VGenXL)"
        )


async def test_an_ltx_video_folder_draws_from_the_picture(tmp_path, tiny_pipe):
    """Lightricks/LTX-Video's folder says LTXPipeline (text-to-video): its weights load as the
    image-to-video pipeline, which takes no end frame."""
    import json

    from engine.core import DiffusersEngine
    from engine.tiny import TINY_VIDEO_BUILDERS
    from engine.video import VideoSettings

    folder = tmp_path / "ltx"
    TINY_VIDEO_BUILDERS["ltx"]().save_pretrained(folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "_class_name": "LTXPipeline"}))
    settings = VideoSettings(source=str(folder), frames=9)
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", video=settings) as engine:
        assert engine.supports(None, Feature.END_FRAME) is not None
        result = await engine.render(clip_request())
        assert len(result.clips[0]) == 9 and result.fps == 24
