"""Two to five images -> four tiles that mix them (/blend).

Two ways, as for image prompts (`request.image_prompt_method`, which `Engine.image_prompt_method`
chose): with the operator's IP-Adapter (`IP_ADAPTER`), the images' CLIP embeddings are averaged and
steer a text-to-image render together, beside the prompt, through `image_prompt.ip_adapter_on`.

Without one, the images are mixed in the VAE's latent space. Each image is fitted to the tile size
(cover, then centre crop) and encoded. Tile k keeps the surroundings of image k mod n (its latents
outside a soft disc in the middle) and takes its middle from the other images (their normalised
mean, the spherical midpoint for two; for two images, the other one itself): one image's subject
in another's scene, the four tiles leaning different ways. The combined latents are re-noised to
`strength` and denoised with the prompt, which joins the two. Before, each tile took its overall
colour from the lead image and its forms from the others; the shipped model then often redrew the
tile in one image's colours only (bench/edit_bench.py: both pictures' colours in 67 % of the tiles
of two-picture blends, 83 % now). A plain mean of all the latents looks like a double exposure,
and once re-noised far enough to clean that up a small model falls back to one image's colours
(measured in engine/params.py, BLEND_STRENGTH).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
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
    strength_of,
)
from engine.actions.image_prompt import IPAdapter, ip_adapter_on
from engine.actions.style import style_target
from engine.family import of_pipeline
from engine.params import BLEND_EDGE, BLEND_IP_ADAPTER_SCALE, BLEND_MAX_IMAGES, BLEND_MIDDLE, BLEND_MIN_IMAGES
from engine.requests import ImagePromptMethod, RenderRequest
from engine.vae import encode_pixels


def check_inputs(request: RenderRequest) -> None:
    check_common(request)
    count = len(request.blend_images)
    if not BLEND_MIN_IMAGES <= count <= BLEND_MAX_IMAGES:
        raise ValueError(f"a blend takes {BLEND_MIN_IMAGES} to {BLEND_MAX_IMAGES} images, got {count}")
    if request.init_image is not None:
        raise ValueError("a blend takes blend_images, not init_image")
    if request.image_prompt_method not in tuple(ImagePromptMethod):
        raise ValueError(f"image_prompt_method must be one of {', '.join(ImagePromptMethod)}")
    if request.strength is None or not 0 < request.strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {request.strength}")
    if int(request.steps * request.strength) < 1:
        raise ValueError(f"steps={request.steps} at strength={request.strength} leaves no step to run")


@torch.no_grad()
def blend(
    pipe: Any,
    requests: Sequence[RenderRequest],
    *,
    on_step: StepCallback | None = None,
    safety_checker: bool = False,
    ip_adapter: IPAdapter | None = None,
) -> list[list[Image.Image]]:
    """`pipe` is the text-to-image pipeline for IP_ADAPTER batches, the image-to-image one otherwise."""
    # 1. check inputs (the batch shares size, steps, guidance, strength, tile, stop and method)
    for request in requests:
        check_inputs(request)
    first = requests[0]
    device = pipe._execution_device
    size = (first.width, first.height)
    via_adapter = first.image_prompt_method == ImagePromptMethod.IP_ADAPTER
    if via_adapter and ip_adapter is None:
        raise ValueError("this model has no IP-Adapter installed (IP_ADAPTER), so it cannot blend that way")

    # 2. encode prompts (an empty prompt is fine: the images lead)
    embeds = encode_prompts(pipe, requests, device)
    gens = generators(requests)

    # 3. the images' part: averaged image embeddings, or combined latents
    switch: contextlib.AbstractContextManager[None]
    if via_adapter:
        assert ip_adapter is not None  # checked in step 1
        switch = ip_adapter_on(pipe, ip_adapter, BLEND_IP_ADAPTER_SCALE)
        steps_run = first.steps
    else:
        switch = contextlib.nullcontext()
        steps_run = min(int(first.steps * strength_of(first)), first.steps)
        latents = torch.cat([_combined_latents(pipe, r, size) for r in requests])
        start: Any = latents
        if not of_pipeline(pipe).img2img_takes_latents:  # (Z-Image's image-to-image reads pictures only)
            start = pipe.image_processor.postprocess(of_pipeline(pipe).decode_vae(pipe, latents), output_type="pil")
        images: dict[str, Any] = {"image": start, "strength": first.strength, **size_kwargs(pipe, *size)}

    # 4. denoise in one batched call; the callback reports progress, cancels and applies --stop
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
            if via_adapter:  # the projection the switch attached reads the embeddings
                embeds_of_images = _mean_image_embeds(pipe, requests, device, first.guidance_scale > 1)
                images = {"ip_adapter_image_embeds": embeds_of_images, "height": first.height, "width": first.width}
            latents = pipe(
                **embeds,
                **images,
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


def _encode(pipe: Any, images: Sequence[Image.Image], size: tuple[int, int]) -> torch.Tensor:
    """Scaled VAE latents (the distribution's mode) of each image fitted to `size`."""
    fitted = [ImageOps.fit(im.convert("RGB"), size, Image.Resampling.LANCZOS) for im in images]
    pixels = pipe.image_processor.preprocess(fitted, height=size[1], width=size[0])
    return encode_pixels(pipe.vae, pixels).to(of_pipeline(pipe).denoiser(pipe).dtype)


def spherical_mean(latents: torch.Tensor) -> torch.Tensor:
    """The mean direction at the mean norm: a mean that keeps the latents' scale (slerp's midpoint for two)."""
    flat = latents.float().flatten(1)
    mean = flat.mean(0)
    norm = flat.norm(dim=1).mean()
    return (mean * norm / mean.norm().clamp_min(1e-8)).view(latents.shape[1:]).to(latents.dtype)


def _combined_latents(pipe: Any, request: RenderRequest, size: tuple[int, int]) -> torch.Tensor:
    """One latent per tile: the lead image's (k mod n) surroundings around the others' middle (their
    spherical mean; for two, the other image itself), so each tile sets one image's subject in
    another's scene and, over the four tiles, every image leads."""
    sources = _encode(pipe, request.blend_images, size)
    n, _, h, w = sources.shape
    middle = _middle(h, w).to(sources.dtype)
    tiles = []
    for k in range(len(request.seeds)):
        lead = k % n
        others = spherical_mean(torch.cat([sources[:lead], sources[lead + 1 :]]))
        tiles.append(middle * others + (1 - middle) * sources[lead])
    return torch.stack(tiles)


def _middle(h: int, w: int) -> torch.Tensor:
    """A soft disc in the middle of an h x w latent: 1 inside, 0 outside."""
    ys = (torch.arange(h, dtype=torch.float32) + 0.5 - h / 2) / min(h, w)
    xs = (torch.arange(w, dtype=torch.float32) + 0.5 - w / 2) / min(h, w)
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.sigmoid((BLEND_MIDDLE - (x**2 + y**2).sqrt()) / BLEND_EDGE)


def _mean_image_embeds(pipe: Any, requests: Sequence[RenderRequest], device: torch.device, cfg: bool) -> list:
    """`ip_adapter_image_embeds` for the batch: per adapter, each request's images averaged, one row per tile."""
    from diffusers.models.embeddings import ImageProjection

    per_adapter = []
    for layer in pipe.unet.encoder_hid_proj.image_projection_layers:
        hidden = not isinstance(layer, ImageProjection)  # "plus" adapters read the encoder's hidden states
        positive, negative = [], []
        for request in requests:
            embeds, uncond = pipe.encode_image(list(request.blend_images), device, 1, hidden)
            tiles = len(request.seeds)
            positive.append(embeds.mean(0, keepdim=True)[None].repeat_interleave(tiles, 0))
            negative.append(uncond.mean(0, keepdim=True)[None].repeat_interleave(tiles, 0))
        rows = torch.cat(positive)
        per_adapter.append(torch.cat([torch.cat(negative), rows]) if cfg else rows)
    return per_adapter
