"""One tile -> new tiles that keep its composition (V1–V4, Vary Strong/Subtle).

Image-to-image from the stored tile: the source is encoded, noised to `strength` and
denoised again with the prompt. `VARY_STRONG` (0.75) and `VARY_SUBTLE` (0.4) live in
`engine.params` so the bot can name them without torch; at Subtle the tiles stay visibly
closer to the source (measured in tests/engine/test_actions.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

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
from engine.params import VARY_STRONG, VARY_SUBTLE
from engine.requests import RenderRequest

__all__ = ["VARY_STRONG", "VARY_SUBTLE", "check_inputs", "variation"]


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    check_source(request, "a variation")


@torch.no_grad()
def variation(
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

    # 2. encode prompts: one row per tile, chaos applied per tile
    embeds = encode_prompts(pipe, requests, device)

    # 3. the source image once per tile, and one generator per tile
    images = [source_of(r).convert("RGB") for r in requests for _ in r.seeds]
    gens = generators(requests)

    # 4. denoise from the noised source in one batched call
    steps_run = min(int(first.steps * strength_of(first)), first.steps)
    state = step_state(
        steps_run,
        first.stop,
        on_step,
        size=(first.width, first.height),
        embeds=embeds,
        style=style_target(pipe, requests),
    )
    with seamless(pipe, first.tile):
        latents = pipe(
            **embeds,
            image=images,
            **size_kwargs(pipe, first.width, first.height),
            strength=first.strength,
            num_inference_steps=first.steps,
            **of_pipeline(pipe).guidance_kwargs(first.guidance_scale),
            generator=gens,
            output_type="latent",
            callback_on_step_end=state,
            callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
        ).images

        # 5. stop if cancelled, predict the clean image after --stop, decode (common.finish)
        out = finish(pipe, latents, state, first.guidance_scale, safety_checker, (first.width, first.height))
    return split(out, requests)
