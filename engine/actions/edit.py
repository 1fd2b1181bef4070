"""A picture + an instruction -> four edits of it ("make it night", "remove the hat").

Families that edit by instruction take the picture as a *reference* (Flux.1 Kontext's `image`,
Flux.2 [klein]'s reference images, Qwen-Image-Edit's `image`, which its Qwen2.5-VL text encoder
reads with the instruction), not as a starting point to noise: the prompt says what to change and
the model keeps the rest. Each request's four tiles share its picture and prompt and
differ in their seeds. Requests are drawn one pipeline call each: a reference belongs to its call
(klein reads `image` as the references of the whole call), so pictures never mix across members.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from PIL import Image

from engine.actions.common import (
    StepCallback,
    check_common,
    encode_prompts,
    finish,
    generators,
    source_of,
    step_state,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.requests import RenderRequest


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if not request.prompt.strip():
        raise ValueError("the instruction is empty: say what to change, e.g. 'make it night'")
    if request.init_image is None:
        raise ValueError("an edit needs init_image, the picture to edit")


@torch.no_grad()
def edit(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
) -> list[list[Image.Image]]:
    # 1. check inputs (the batch shares size, steps, guidance and stop)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device
    family = of_pipeline(pipe)
    results: list[list[Image.Image]] = []
    for request in requests:
        # 2. the picture is the reference every tile edits
        reference = source_of(request).convert("RGB").resize((first.width, first.height), Image.Resampling.LANCZOS)

        # 3. encode the instruction (with the picture, for a family whose text encoder reads it): one row
        #    per tile (chaos noise per tile, as for imagine); one generator per tile
        embeds = encode_prompts(pipe, [request], device, reference=reference)
        gens = generators([request])
        per_prompt = 1
        if family.one_prompt_per_call:  # its tiles share the first row (--chaos, which would differ, is refused)
            embeds = {name: rows[:1] for name, rows in embeds.items()}
            per_prompt = len(gens)

        # 4. denoise; the callback reports progress, cancels and applies --stop
        state = step_state(
            first.steps,
            first.stop,
            on_step,
            size=(first.width, first.height),
            embeds=embeds,
            style=style_target(pipe, requests),
        )
        latents = pipe(
            image=reference,
            **embeds,
            height=first.height,
            width=first.width,
            **family.size_kwargs(first.width, first.height),
            num_inference_steps=first.steps,
            **family.guidance_kwargs(first.guidance_scale),
            num_images_per_prompt=per_prompt,
            generator=gens,
            output_type="latent",
            callback_on_step_end=state,
            callback_on_step_end_tensor_inputs=state.tensor_inputs(pipe),
        ).images

        # 5. stop if cancelled, predict the clean image after --stop, decode (common.finish)
        results.append(finish(pipe, latents, state, first.guidance_scale, safety_checker, (first.width, first.height)))
    return results
