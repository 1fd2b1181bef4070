"""One tile -> the same tile at twice the size ("Upscale (2x)").

"Hires fix": a Lanczos resize to 2x, then image-to-image at low strength with the same model
redraws the detail the resize blurred. No extra upscaler model is needed (64 -> 128 px
in ~0.5 s on the tiny model on two CPU cores). `UPSCALE_SUBTLE` (0.1) stays faithful; `UPSCALE_CREATIVE` (0.3)
invents more detail. Strengths that suit SD1.5's hires fix (0.35+) make the shipped 64 px model
redraw the subject at its own scale (smaller), so the defaults are measured on that model
(`bench/upscale_bench.py`, BENCHMARKS.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter

from engine.actions.common import (
    StepCallback,
    check_common,
    check_source,
    encode_prompts,
    finish,
    generators,
    seamless,
    size_kwargs,
    source_of,
    split,
    step_state,
    strength_of,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.params import UPSCALE_CREATIVE, UPSCALE_SUBTLE
from engine.requests import RenderRequest
from engine.vae import tiled_if_large

__all__ = ["SCALE", "UPSCALE_CREATIVE", "UPSCALE_SUBTLE", "check_inputs", "upscale"]

SCALE = 2


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if len(request.seeds) != 1:
        raise ValueError(f"an upscale makes one image and takes one seed, got {len(request.seeds)}")
    check_source(request, "an upscale")


@torch.no_grad()
def upscale(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
) -> list[list[Image.Image]]:
    # 1. check inputs (the batch shares size, steps, guidance, strength, tile and stop)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device

    # 2. encode prompts
    embeds = encode_prompts(pipe, requests, device)

    # 3. resize each source 2x with Lanczos; one generator per image
    size = (first.width * SCALE, first.height * SCALE)
    images = [source_of(r).convert("RGB").resize(size, Image.Resampling.LANCZOS) for r in requests]
    gens = generators(requests)

    # 4. redraw detail at low strength in one batched call
    steps_run = min(int(first.steps * strength_of(first)), first.steps)
    state = step_state(steps_run, first.stop, on_step, size=size, embeds=embeds, style=style_target(pipe, requests))
    # (a 2x image may be large enough to encode and decode tile by tile: engine/vae.py)
    with seamless(pipe, first.tile), tiled_if_large(pipe.vae, *size):
        latents = pipe(
            **embeds,
            image=images,
            **size_kwargs(pipe, *size),
            strength=first.strength,
            num_inference_steps=first.steps,
            **of_pipeline(pipe).guidance_kwargs(first.guidance_scale),
            generator=gens,
            output_type="latent",
            callback_on_step_end=state,
            callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
        ).images

        # 5. stop if cancelled, predict the clean image after --stop, decode (common.finish)
        out = finish(pipe, latents, state, first.guidance_scale, safety_checker, size)

    # 6. Subtle keeps the picture: the resize's shapes and colours, the redraw's detail (Creative may move them)
    results = split(out, requests)
    if first.strength is not None and first.strength <= UPSCALE_SUBTLE:
        results = [
            [keep_picture(image, resized) for image in redrawn]
            for redrawn, resized in zip(results, images, strict=True)
        ]
    return results


def keep_picture(redrawn: Image.Image, resized: Image.Image, radius: float = SCALE) -> Image.Image:
    """`redrawn` with its low frequencies swapped for `resized`'s: redrawn + blur(resized) - blur(redrawn).

    Image-to-image at a low strength still moves shapes and colours a little (7.7/255 on the shipped
    model at Upscale (Subtle)); what an upscale adds is detail, finer than the source's pixels. A
    Gaussian of the scale's radius splits the two, so the result's coarse content is the resize's
    (the source's) and its fine detail the model's. The safety checker's verdict is kept.
    """
    low_redrawn = np.asarray(redrawn.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    low_resized = np.asarray(resized.filter(ImageFilter.GaussianBlur(radius)), np.float32)
    kept = np.asarray(redrawn, np.float32) - low_redrawn + low_resized
    image = Image.fromarray(np.clip(np.rint(kept), 0, 255).astype(np.uint8), "RGB")
    image.info.update(redrawn.info)
    return image
