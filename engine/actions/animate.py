"""Animate: a picture -> a clip that starts on it (and ends on `end_image`, or on itself with --loop).

Two ways, one contract (frames in order, the first the picture):

- the operator's image-to-video pipeline (`VIDEO_MODEL`: Wan, LTX-Video, CogVideoX…), called with the
  picture as its `image` (and `last_image` where it takes one);
- the shipped motion model (engine/motion.py) in the image model's own UNet: every frame starts as
  the picture noised to `strength` (--motion: how far frames may drift from it), the motion modules
  mix the frames along time, and the first frame (and the end picture) is held to its own latents
  at every step, so the clip leaves from the picture and the modules carry it forward.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from PIL import Image

from engine.actions.common import RenderInterrupted, check_common, source_of
from engine.motion import in_motion
from engine.preview import latents_to_rgb
from engine.requests import RenderRequest
from engine.vae import decode_latents, encode_pixels
from engine.video import MOTION, VideoModel, clip_frames

# report(step, total, preview) -> True when the request was cancelled
ClipReport = Callable[[int, int, Image.Image | None], bool]
DECODE_CHUNK = 8  # frames decoded at once by the shipped model's VAE


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if request.init_image is None:
        raise ValueError("animate needs init_image, the clip's first frame")
    if len(request.seeds) != 1:
        raise ValueError("animate draws one clip per request: give one seed")
    if request.frames < 0:
        raise ValueError(f"frames must be 0 (the model's length) or more, got {request.frames}")
    if request.strength is not None and not 0 < request.strength <= 1:
        raise ValueError(f"strength (motion) must be in (0, 1], got {request.strength}")


def end_of(request: RenderRequest) -> Image.Image | None:
    """The picture the clip must end on: --end's, or with --loop its own first frame."""
    if request.end_image is not None:
        return request.end_image
    return source_of(request) if request.loop else None


@torch.no_grad()
def animate(video: VideoModel, request: RenderRequest, report: ClipReport) -> list[Image.Image]:
    """The clip's frames, first to last."""
    check_inputs(request)
    frames = clip_frames(video.family, request.frames)
    if video.family is MOTION:
        return _motion_clip(video, request, frames, report)
    return _pipeline_clip(video, request, frames, report)


def _pipeline_clip(video: VideoModel, request: RenderRequest, frames: int, report: ClipReport) -> list[Image.Image]:
    pipe = video.pipe
    start = source_of(request).convert("RGB").resize((request.width, request.height), Image.Resampling.LANCZOS)
    kwargs: dict[str, object] = {
        "image": start,
        "prompt": request.prompt,
        "height": request.height,
        "width": request.width,
        "num_frames": frames,
        "num_inference_steps": request.steps,
        "guidance_scale": request.guidance_scale,
        "generator": torch.Generator("cpu").manual_seed(request.seeds[0]),
        "output_type": "pil",
    }
    if request.negative_prompt.strip() and video.takes("negative_prompt"):
        kwargs["negative_prompt"] = request.negative_prompt
    end = end_of(request)
    if end is not None:  # Engine.supports refused --end and --loop where the pipeline has no last frame
        kwargs["last_image"] = end.convert("RGB").resize(start.size, Image.Resampling.LANCZOS)
    if video.takes("frame_rate"):
        kwargs["frame_rate"] = int(video.family.fps)
    if video.takes("motion_bucket_id") and request.strength is not None:  # Stable Video Diffusion's motion knob
        kwargs["motion_bucket_id"] = round(255 * request.strength)
    if video.takes("callback_on_step_end"):

        def on_step_end(pipeline: object, step: int, _t: object, tensors: dict[str, object]) -> dict[str, object]:
            if report(step + 1, request.steps, start):
                raise RenderInterrupted
            return tensors

        kwargs["callback_on_step_end"] = on_step_end
    output = pipe(**kwargs)
    clip = output.frames[0]
    return [frame if isinstance(frame, Image.Image) else Image.fromarray(np.asarray(frame)) for frame in clip]


def _pixels(image: Image.Image, width: int, height: int, device: torch.device) -> torch.Tensor:
    array = np.asarray(image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS), dtype=np.float32)
    return torch.from_numpy(array / 127.5 - 1).permute(2, 0, 1).unsqueeze(0).to(device)


def _motion_clip(video: VideoModel, request: RenderRequest, frames: int, report: ClipReport) -> list[Image.Image]:
    pipe, adapter = video.pipe, video.adapter
    unet, vae = pipe.unet, pipe.vae
    device, dtype = unet.device, unet.dtype
    # 1. the prompt, once, for every frame
    cfg = request.guidance_scale > 1
    positive, negative = pipe.encode_prompt(request.prompt, device, 1, cfg, request.negative_prompt or None)
    context = torch.cat([negative, positive]) if cfg else positive
    context = context.repeat_interleave(frames, dim=0).to(dtype)

    # 2. the picture's latents (and the end's): every frame starts from them, crossfaded to the end
    first = encode_pixels(vae, _pixels(source_of(request), request.width, request.height, device)).to(dtype)
    end_image = end_of(request)
    last = None if end_image is None else encode_pixels(vae, _pixels(end_image, request.width, request.height, device))
    weights = torch.linspace(0, 1, frames, device=device, dtype=dtype).view(frames, 1, 1, 1)
    init = first.repeat(frames, 1, 1, 1) if last is None else torch.lerp(first, last.to(dtype), weights)

    # 3. timesteps from --motion: the frames are noised that far and denoised from there
    scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
    scheduler.set_timesteps(request.steps, device=device)
    strength = request.strength if request.strength is not None else 1.0
    kept = min(request.steps, max(1, round(request.steps * strength)))
    begin = (request.steps - kept) * scheduler.order
    timesteps = scheduler.timesteps[begin:]
    if hasattr(scheduler, "set_begin_index"):
        scheduler.set_begin_index(begin)
    generator = torch.Generator("cpu").manual_seed(request.seeds[0])
    noise = torch.randn(init.shape, generator=generator, dtype=torch.float32).to(device, dtype)
    latents = scheduler.add_noise(init, noise, timesteps[:1].repeat(frames))

    # 4. denoise every frame at once, the motion modules mixing them; the ends held to their pictures
    with in_motion(unet, adapter, frames):
        for i, t in enumerate(timesteps):
            model_input = torch.cat([latents] * 2) if cfg else latents
            model_input = scheduler.scale_model_input(model_input, t)
            predicted = unet(model_input, t, encoder_hidden_states=context).sample
            if cfg:
                unconditional, conditional = predicted.chunk(2)
                predicted = unconditional + request.guidance_scale * (conditional - unconditional)
            latents = scheduler.step(predicted, t, latents).prev_sample
            done = i + 1 == len(timesteps)
            latents[:1] = first if done else scheduler.add_noise(first, noise[:1], timesteps[i + 1 : i + 2])
            if last is not None:
                latents[-1:] = last if done else scheduler.add_noise(last, noise[-1:], timesteps[i + 1 : i + 2])
            preview = None
            if video.latent_rgb is not None:
                preview = Image.fromarray(latents_to_rgb(latents[frames // 2 : frames // 2 + 1], video.latent_rgb)[0])
            if report(i + 1, len(timesteps), preview):
                raise RenderInterrupted

    # 5. decode, a few frames at a time
    pixels = torch.cat([decode_latents(vae, chunk) for chunk in latents.split(DECODE_CHUNK)])
    array = ((pixels.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(frame) for frame in array]
