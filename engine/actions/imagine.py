"""Text -> tiles: the /imagine grid (and 🔄, which is an imagine with new seeds).

All tiles of every request in the batch go through ONE text-to-image call; each tile has its
own CPU generator, so a tile depends only on its seed, its prompt and the batch it ran in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from engine.actions.common import (
    StepCallback,
    chaos_latents,
    check_common,
    encode_prompts,
    finish,
    generators,
    seamless,
    split,
    step_state,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.requests import RenderRequest


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if not request.prompt.strip():
        raise ValueError("the prompt is empty: describe what to imagine")
    if request.init_image is not None:
        raise ValueError("imagine takes no init_image (use a variation)")


@torch.no_grad()
def imagine(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
) -> list[list[Image.Image]]:
    # 1. check inputs (the batch shares size, steps, guidance, tile and stop)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device

    # 2. encode prompts: one row per tile, chaos applied per tile
    embeds = encode_prompts(pipe, requests, device)

    # 3. one generator per tile; --chaos adds a low-frequency push to a tile's starting noise
    gens = generators(requests)
    latents = chaos_latents(pipe, requests, gens)

    # 4. denoise in one batched call; the callback reports progress, cancels and applies --stop
    state = step_state(
        first.steps,
        first.stop,
        on_step,
        size=(first.width, first.height),
        embeds=embeds,
        style=style_target(pipe, requests),
    )
    with seamless(pipe, first.tile):
        latents = pipe(
            **embeds,
            height=first.height,
            width=first.width,
            **of_pipeline(pipe).size_kwargs(first.width, first.height),
            num_inference_steps=first.steps,
            **of_pipeline(pipe).guidance_kwargs(first.guidance_scale),
            generator=gens,
            latents=latents,
            output_type="latent",
            callback_on_step_end=state,
            callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
        ).images

        # 5. stop if cancelled, predict the clean image after --stop, decode (common.finish)
        images = finish(pipe, latents, state, first.guidance_scale, safety_checker, (first.width, first.height))
    return split(images, requests)
