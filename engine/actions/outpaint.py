"""A picture on a larger canvas -> the new area drawn around it (Zoom Out, Custom Zoom, Make Square, Pan).

The request's `init_image` is the canvas with the kept picture already in place and `mask_image`
marks the new area in white (`engine.canvas.place` makes both). It runs diffusers' inpainting
pipeline made with `from_pipe` from the loaded weights: with a plain 4-channel UNet the kept
area's latents are re-imposed at every step, so the new area grows out of the picture; a
9-channel inpainting UNet, when one is configured, reads the mask itself. The new area starts
from the kept picture's edge colours smeared outwards (`fill_new_area`), re-noised to the request's
strength (`engine.params.OUTPAINT_NEW_AREA`; unset: 1, pure noise): from pure noise the model drew
a copy of the kept object into it far more often than it draws a second object unasked
(bench/outpaint_bench.py). Afterwards the kept picture is
pasted back through a feathered mask whose blend band lies inside the picture's own edge, so
the seam does not show and the rest of the picture is exactly what the member kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFilter, ImageOps

from engine.actions.common import (
    StepCallback,
    binary_mask,
    check_common,
    check_mask,
    encode_prompts,
    feather_inside,
    feather_radius,
    finish,
    generators,
    mask_of,
    paste_kept,
    source_of,
    split,
    step_state,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.requests import RenderRequest

__all__ = ["check_inputs", "fill_new_area", "outpaint"]


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if request.init_image is None:
        raise ValueError("an outpaint needs init_image, the canvas with the kept picture on it")
    if request.init_image.size != (request.width, request.height):
        raise ValueError(
            f"init_image is {request.init_image.width}x{request.init_image.height} "
            f"but the request is {request.width}x{request.height}"
        )
    if request.strength is not None and not 0 < request.strength <= 1:
        raise ValueError(f"an outpaint's strength must be in (0, 1], got {request.strength}")
    check_mask(request, "an outpaint")


def fill_new_area(canvas: Image.Image, mask: Image.Image) -> Image.Image:
    """The masked (white) area filled with the colours of the kept picture's edge, smeared outwards.

    Push-pull: halve the picture (its edge's pixels only) until one pixel is left, then fill each
    level's holes from the level below. Only the band of the kept picture along the new area is
    smeared, not its middle: the new area continues the picture's edge (usually its background)
    instead of carrying the subject's colours out, which the model would draw into a copy of it.
    The VAE then encodes the picture's edge without a hard step into black, and a 9-channel UNet's
    masked image has no false edge. The kept pixels are returned unchanged.
    """
    image = np.asarray(canvas.convert("RGB"), dtype=np.float64) / 255
    drawn = binary_mask(mask)
    keep = 1.0 - np.asarray(drawn, dtype=np.float64)[..., None] / 255
    band = 2 * feather_radius(*canvas.size) + 1
    near = np.asarray(drawn.filter(ImageFilter.MaxFilter(2 * band + 1)), dtype=np.float64)[..., None] / 255
    edge = keep * near
    filled = _push_pull(image * edge, edge)
    return Image.fromarray(np.round((keep * image + (1 - keep) * filled) * 255).astype(np.uint8))


def _push_pull(weighted: np.ndarray, weight: np.ndarray) -> np.ndarray:
    h, w = weight.shape[:2]
    known = weighted / np.maximum(weight, 1e-8)
    if h == 1 and w == 1:
        return known
    # push: 2x2 sums (odd edges padded with nothing known)
    ph, pw = h + h % 2, w + w % 2
    pad = ((0, ph - h), (0, pw - w), (0, 0))
    sw = np.pad(weighted, pad).reshape(ph // 2, 2, pw // 2, 2, -1).sum(axis=(1, 3))
    sk = np.pad(weight, pad).reshape(ph // 2, 2, pw // 2, 2, -1).sum(axis=(1, 3))
    coarse = _push_pull(sw, sk)
    # pull: the coarse level, upsampled, fills what this level does not know
    up = np.repeat(np.repeat(coarse, 2, axis=0), 2, axis=1)[:h, :w]
    alpha = np.minimum(weight, 1.0)
    return alpha * known + (1 - alpha) * up


@torch.no_grad()
def outpaint(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
) -> list[list[Image.Image]]:
    # 1. check inputs (the batch shares size, steps and guidance)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device

    # 2. encode prompts: one row per image, chaos applied per image
    embeds = encode_prompts(pipe, requests, device)

    # 3. fill each new area from the kept picture; one canvas, mask and generator per image
    canvases = [fill_new_area(source_of(r), mask_of(r)) for r in requests]
    images = [canvas for canvas, r in zip(canvases, requests, strict=True) for _ in r.seeds]
    masks = [binary_mask(mask_of(r)) for r in requests for _ in r.seeds]
    gens = generators(requests)

    # 4. denoise the new area from its fill, re-noised to the request's strength, in one batched call
    state = step_state(
        first.steps,
        first.stop,
        on_step,
        size=(first.width, first.height),
        embeds=embeds,
        style=style_target(pipe, requests),
    )
    latents = pipe(
        **embeds,
        image=images,
        mask_image=masks,
        height=first.height,
        width=first.width,
        **of_pipeline(pipe).inpaint_kwargs(first.width, first.height),
        strength=1.0 if first.strength is None else first.strength,
        num_inference_steps=first.steps,
        **of_pipeline(pipe).guidance_kwargs(first.guidance_scale),
        generator=gens,
        output_type="latent",
        callback_on_step_end=state,
        callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
    ).images

    # 5. stop if cancelled, then decode (common.finish; --stop does not apply to an edit)
    out = finish(pipe, latents, state, first.guidance_scale, safety_checker, (first.width, first.height))

    # 6. paste the kept picture back, blending only inside its edge (the new area stays as drawn)
    radius = feather_radius(first.width, first.height)
    drawn = [ImageOps.invert(feather_inside(ImageOps.invert(binary_mask(mask_of(r))), radius)) for r in requests]
    return split(paste_kept(out, requests, drawn), requests)
