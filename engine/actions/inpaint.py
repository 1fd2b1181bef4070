"""A picture and a mask -> the masked region redrawn, the rest kept (Vary (Region)).

diffusers' inpainting pipeline made with `from_pipe` from the loaded weights: with a plain
4-channel UNet the kept area's latents are re-imposed at every step; a 9-channel inpainting UNet,
when one is configured, reads the mask itself. `strength` 1 (`VARY_REGION`) redraws the region
from scratch; lower keeps its colours and layout. Afterwards the kept area is pasted back
through a feathered mask whose blend band lies inside the redrawn region (the original pixels
are there to blend with), so everything the member kept is exactly as it was.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from engine.actions.common import (
    StepCallback,
    binary_mask,
    check_common,
    check_mask,
    check_source,
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
    strength_of,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.params import VARY_REGION
from engine.requests import RenderRequest

__all__ = ["VARY_REGION", "check_inputs", "inpaint"]


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    check_source(request, "an inpaint")
    check_mask(request, "an inpaint")


@torch.no_grad()
def inpaint(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
) -> list[list[Image.Image]]:
    # 1. check inputs (the batch shares size, steps, guidance and strength)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device

    # 2. encode prompts: one row per image, chaos applied per image
    embeds = encode_prompts(pipe, requests, device)

    # 3. the source and its mask once per image, and one generator per image
    images = [source_of(r).convert("RGB") for r in requests for _ in r.seeds]
    masks = [binary_mask(mask_of(r)) for r in requests for _ in r.seeds]
    gens = generators(requests)

    # 4. denoise the masked region in one batched call
    steps_run = min(int(first.steps * strength_of(first)), first.steps)
    state = step_state(
        steps_run,
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
        strength=first.strength,
        num_inference_steps=first.steps,
        **of_pipeline(pipe).guidance_kwargs(first.guidance_scale),
        generator=gens,
        output_type="latent",
        callback_on_step_end=state,
        callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
    ).images

    # 5. stop if cancelled, then decode (common.finish; --stop does not apply to an edit)
    out = finish(pipe, latents, state, first.guidance_scale, safety_checker, (first.width, first.height))

    # 6. paste the kept area back, blending only inside the redrawn region
    radius = feather_radius(first.width, first.height)
    drawn = [feather_inside(mask_of(r), radius) for r in requests]
    return split(paste_kept(out, requests, drawn), requests)
