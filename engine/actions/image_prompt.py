"""Text + a member's picture -> four tiles the picture steers (Midjourney's image prompts, `--iw`).

Two ways, and the result says which ran (`ImagePromptMethod`):

- **IP-Adapter**, when the operator installed one for the model (`IP_ADAPTER`): the picture's CLIP
  image embedding is injected through the adapter's extra cross-attention, at scale
  `ip_adapter_scale(--iw)`, into an ordinary text-to-image run. Subject and style carry over;
  the layout follows the prompt and the seed.
- **Image-to-image** otherwise: the picture, fitted to the request's size, is noised to
  `image_prompt_strength(--iw)` and denoised with the prompt, so its layout and colours carry over.

The adapter is loaded once, then switched off (the UNet's own attention processors restored and
its image projection detached) so every other render runs the plain model; `ip_adapter_on`
switches it on for one batch. The worker thread renders one batch at a time, so no other
request ever sees the switched modules (as `common.seamless`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps

from engine.actions.common import (
    StepCallback,
    check_common,
    encode_prompts,
    finish,
    generators,
    seamless,
    size_kwargs,
    split,
    step_state,
)
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.params import IMAGE_WEIGHT_MAX, IMAGE_WEIGHT_MIN, image_prompt_strength, ip_adapter_scale
from engine.requests import ImagePromptMethod, RenderRequest

WEIGHT_SUFFIXES = (".safetensors", ".bin")


@dataclass
class IPAdapter:
    """An IP-Adapter loaded into a pipeline's UNet, kept switched off between the renders that use it."""

    folder: Path
    weight_name: str
    processors: dict[str, Any]  # the adapter's attention processors
    projection: torch.nn.Module  # the UNet's image projection (`encoder_hid_proj`) the adapter added
    plain_processors: dict[str, Any]  # the UNet's own processors


def adapter_weight_name(folder: Path, weight_name: str | None = None) -> str:
    """The adapter's weights file in `folder`: the one named, or the only one there."""
    if weight_name:
        if not (folder / weight_name).is_file():
            raise ValueError(f"IP-Adapter weights {weight_name!r} not found in {folder}")
        return weight_name
    found = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if len(found) != 1:
        listed = ", ".join(found) or "none"
        raise ValueError(
            f"{folder} must hold exactly one IP-Adapter weights file (found: {listed}); set IP_ADAPTER_WEIGHT"
        )
    return found[0]


def load_ip_adapter(pipe: Any, folder: str | Path, weight_name: str | None = None) -> IPAdapter:
    """Load an IP-Adapter folder (weights + `image_encoder/`) into `pipe`, switched off."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"IP-Adapter folder {folder} does not exist")
    if not (folder / "image_encoder" / "config.json").is_file():
        raise ValueError(f"IP-Adapter folder {folder} has no image_encoder/ (a CLIP vision model) beside its weights")
    name = adapter_weight_name(folder, weight_name)
    unet = pipe.unet
    plain = dict(unet.attn_processors)
    pipe.load_ip_adapter(str(folder), subfolder="", weight_name=name, image_encoder_folder="image_encoder")
    adapter = IPAdapter(folder, name, dict(unet.attn_processors), unet.encoder_hid_proj, plain)
    _switch_off(unet, adapter)
    return adapter


def _switch_off(unet: Any, adapter: IPAdapter) -> None:
    unet.set_attn_processor(dict(adapter.plain_processors))
    unet.encoder_hid_proj = None
    unet.config.encoder_hid_dim_type = None


@contextlib.contextmanager
def ip_adapter_on(pipe: Any, adapter: IPAdapter, scale: float) -> Iterator[None]:
    """The adapter active at `scale` for one batch; the plain UNet again afterwards."""
    unet = pipe.unet
    unet.set_attn_processor(dict(adapter.processors))
    unet.encoder_hid_proj = adapter.projection
    unet.config.encoder_hid_dim_type = "ip_image_proj"
    try:
        pipe.set_ip_adapter_scale(scale)
        yield
    finally:
        _switch_off(unet, adapter)


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    if request.image_prompt is None:
        raise ValueError("an image prompt needs image_prompt, the member's picture")
    if request.init_image is not None:
        raise ValueError("an image prompt takes image_prompt, not init_image")
    if not IMAGE_WEIGHT_MIN <= request.image_weight <= IMAGE_WEIGHT_MAX:
        raise ValueError(
            f"image_weight must be between {IMAGE_WEIGHT_MIN:g} and {IMAGE_WEIGHT_MAX:g}, got {request.image_weight:g}"
        )
    if request.image_prompt_method not in tuple(ImagePromptMethod):
        raise ValueError(f"image_prompt_method must be one of {', '.join(ImagePromptMethod)}")
    if request.image_prompt_method == ImagePromptMethod.IMAGE_TO_IMAGE:
        strength = image_prompt_strength(request.image_weight)
        if int(request.steps * strength) < 1:
            raise ValueError(f"steps={request.steps} at --iw {request.image_weight:g} leaves no step to run")


@torch.no_grad()
def image_prompt(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
    ip_adapter: IPAdapter | None = None,
) -> list[list[Image.Image]]:
    """`pipe` is the text-to-image pipeline for IP_ADAPTER batches, the image-to-image one otherwise."""
    # 1. check inputs (the batch shares size, steps, guidance, tile, stop, method and --iw)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device
    method = first.image_prompt_method
    if method == ImagePromptMethod.IP_ADAPTER and ip_adapter is None:
        raise ValueError("this model has no IP-Adapter installed (IP_ADAPTER), so it cannot render this image prompt")

    # 2. encode prompts: one row per tile, chaos applied per tile
    embeds = encode_prompts(pipe, requests, device)

    # 3. each member's picture once per tile, fitted (centre-cropped) to the request's size;
    #    one generator per tile
    size = (first.width, first.height)
    pictures = [ImageOps.fit(_picture_of(r).convert("RGB"), size, Image.Resampling.LANCZOS) for r in requests]
    per_tile = [picture for picture, r in zip(pictures, requests, strict=True) for _ in r.seeds]
    gens = generators(requests)

    # 4. denoise in one batched call, steered by the picture
    switch: contextlib.AbstractContextManager[None]
    if method == ImagePromptMethod.IP_ADAPTER:
        assert ip_adapter is not None  # checked in step 1
        steered: dict[str, Any] = {"ip_adapter_image": [per_tile], "height": first.height, "width": first.width}
        steps_run = first.steps
        switch = ip_adapter_on(pipe, ip_adapter, ip_adapter_scale(first.image_weight))
    else:
        strength = image_prompt_strength(first.image_weight)
        steered = {"image": per_tile, "strength": strength, **size_kwargs(pipe, *size)}
        steps_run = min(int(first.steps * strength), first.steps)
        switch = contextlib.nullcontext()
    state = step_state(
        steps_run,
        first.stop,
        on_step,
        size=(first.width, first.height),
        embeds=embeds,
        style=style_target(pipe, requests),
    )
    with seamless(pipe, first.tile):
        with switch:
            latents = pipe(
                **embeds,
                **steered,
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


def _picture_of(request: RenderRequest) -> Image.Image:
    """The member's picture of an image prompt (`check_inputs` made sure of it)."""
    if request.image_prompt is None:
        raise ValueError("an image prompt needs image_prompt, the member's picture")
    return request.image_prompt
