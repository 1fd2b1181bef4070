"""The pieces every action shares: prompt encoding with chaos, per-tile generators, the step
callback (progress, cancellation, --stop), the x0 estimate for --stop, seamless tiling, decoding."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from PIL import Image, ImageFilter

from engine.actions.style import StyleTarget
from engine.family import of_pipeline
from engine.params import (
    CHAOS_MAX,
    CHAOS_MIN,
    MAX_STEPS,
    SEED_MAX,
    SEED_MIN,
    STOP_MAX,
    STOP_MIN,
    PromptPart,
    prompt_parts,
    steps_for_stop,
)
from engine.requests import Feature, RenderRequest

# on_step(step, total, latents) -> True to interrupt the whole batch (every request in it was cancelled).
StepCallback = Callable[[int, int, torch.Tensor], bool]

CHAOS_SALT = 0x5EED  # the chaos noise generator is seeded with seed ^ salt, never the latent noise's seed
CHAOS_LOW_FREQ = 1.5  # amplitude of the coarse field at --chaos 100, relative to the white noise


class RenderInterrupted(Exception):
    """Every request in the batch was cancelled; nothing to decode."""


def check_common(request: RenderRequest) -> None:
    if not request.seeds:
        raise ValueError("seeds must hold at least one seed")
    for seed in request.seeds:
        if not SEED_MIN <= seed <= SEED_MAX:
            raise ValueError(f"seed must be between {SEED_MIN} and {SEED_MAX}, got {seed}")
    for name, value in (("width", request.width), ("height", request.height)):
        if value <= 0 or value % 8:
            raise ValueError(f"{name} must be a positive multiple of 8, got {value}")
    if not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {request.steps}")
    if not 0 <= request.guidance_scale <= 50:
        raise ValueError(f"guidance_scale must be between 0 and 50, got {request.guidance_scale}")
    if not CHAOS_MIN <= request.chaos <= CHAOS_MAX:
        raise ValueError(f"chaos must be between {CHAOS_MIN} and {CHAOS_MAX}, got {request.chaos}")
    if not STOP_MIN <= request.stop <= STOP_MAX:
        raise ValueError(f"stop must be between {STOP_MIN} and {STOP_MAX}, got {request.stop}")


def source_of(request: RenderRequest) -> Image.Image:
    """The picture a request draws from, which its action's `check_inputs` made sure of."""
    if request.init_image is None:
        raise ValueError("the request has no init_image")
    return request.init_image


def mask_of(request: RenderRequest) -> Image.Image:
    """The mask of an outpaint or inpaint request (`check_mask` made sure of it)."""
    if request.mask_image is None:
        raise ValueError("the request has no mask_image")
    return request.mask_image


def strength_of(request: RenderRequest) -> float:
    """An image-to-image request's strength (`check_source` made sure of it)."""
    if request.strength is None:
        raise ValueError("the request has no strength")
    return request.strength


def check_source(request: RenderRequest, what: str) -> None:
    """What image-to-image needs on top of check_common: the source tile and a usable strength."""
    if request.init_image is None:
        raise ValueError(f"{what} needs init_image, the source tile")
    if request.init_image.size != (request.width, request.height):
        raise ValueError(
            f"init_image is {request.init_image.width}x{request.init_image.height} "
            f"but the request is {request.width}x{request.height}"
        )
    if request.strength is None or not 0 < request.strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {request.strength}")
    if int(request.steps * request.strength) < 1:
        raise ValueError(f"steps={request.steps} at strength={request.strength} leaves no step to run")


def generators(requests: Sequence[RenderRequest]) -> list[torch.Generator]:
    """One CPU generator per output image: a tile's noise depends on its seed alone."""
    return [torch.Generator("cpu").manual_seed(seed) for r in requests for seed in r.seeds]


def encode_prompts(
    pipe: Any, requests: Sequence[RenderRequest], device: torch.device, reference: Any = None
) -> dict[str, torch.Tensor]:
    """Embeddings for every output row (request-major), with --chaos applied per tile.

    Each distinct request is encoded once and repeated per seed. Returns the keyword arguments
    for the pipeline (`prompt_embeds`, and as the family has them `negative_prompt_embeds` and the
    pooled ones); the model's family (engine/family.py) knows its text encoders. `reference`: the
    picture an instruction edits (`Family.encode_instruction`: Qwen-Image-Edit's encoder reads it too).
    """
    family = of_pipeline(pipe)
    cfg = family.uses_cfg(requests[0].guidance_scale)
    parts = [prompt_parts(r.prompt) for r in requests]
    if any(len(p) > 1 for p in parts):
        reason = family.supports(Feature.MULTI_PROMPT)
        if reason is not None:
            raise ValueError(reason)
    texts = [part.text for p in parts for part in p]
    negatives = [r.negative_prompt for r, p in zip(requests, parts, strict=True) for _ in p] if cfg else None
    if reference is None:
        encoded = family.encode(pipe, texts, negatives, device)
    else:
        encoded = family.encode_instruction(pipe, texts, negatives, reference, device)
    if len(texts) > len(requests):
        encoded = {name: _weigh_parts(name, t, parts) for name, t in encoded.items() if t is not None}
    counts = torch.tensor([len(r.seeds) for r in requests], device=device)
    embeds = {n: _per_tile(t, counts) for n, t in encoded.items() if t is not None}
    # --chaos: nudge each tile's prompt embedding by seeded Gaussian noise, so tiles spread apart.
    pe = embeds["prompt_embeds"]
    scale = (torch.cat([x.flatten() for x in pe]) if isinstance(pe, list) else pe).float().std()
    row = 0
    for r in requests:
        for seed in r.seeds:
            if r.chaos:
                g = torch.Generator("cpu").manual_seed(seed ^ CHAOS_SALT)
                noise = torch.randn(pe[row].shape, generator=g).to(pe[row].device, pe[row].dtype)
                pe[row] = pe[row] + (r.chaos / 100) * scale * noise
            row += 1
    return embeds


def _weigh_parts(name: str, embedding: torch.Tensor, parts: Sequence[tuple[PromptPart, ...]]) -> torch.Tensor:
    """One row per request from one row per `::` part: the parts' embeddings averaged by their weights
    (a negative weight pushes away from its part). A negative branch is the same for every part of
    a request (its `--no`): its first row is kept. Families whose rows differ in length refuse `::`."""
    rows, start = [], 0
    for weighted in parts:
        group = embedding[start : start + len(weighted)]
        start += len(weighted)
        if name.startswith("negative_") or len(weighted) == 1:
            rows.append(group[0])
            continue
        weights = torch.tensor([part.weight for part in weighted], device=group.device, dtype=torch.float32)
        shape = (-1,) + (1,) * (group.ndim - 1)
        blended = (group.float() * weights.view(shape)).sum(dim=0) / weights.sum()
        rows.append(blended.to(group.dtype))
    return torch.stack(rows)


def _per_tile(embedding: Any, counts: torch.Tensor) -> Any:
    """Each request's row repeated once per tile: a tensor, or (Z-Image) a list of per-prompt tensors."""
    if isinstance(embedding, list):
        return [row for row, count in zip(embedding, counts.tolist(), strict=True) for _ in range(count)]
    return embedding.repeat_interleave(counts, dim=0)


def chaos_latents(pipe: Any, requests: Sequence[RenderRequest], gens: list[torch.Generator]) -> torch.Tensor | None:
    """Initial latents with --chaos's low-frequency push, or None (the pipeline draws them itself).

    Each tile's white noise is drawn from its own generator exactly as the pipeline would; a tile
    with chaos gets a coarse (2x2, upsampled) random field added, scaled by chaos/100, and is
    renormalised. Low frequencies set composition and colour layout, so tiles spread apart.
    """
    if not any(r.chaos for r in requests):
        return None
    from diffusers.utils.torch_utils import randn_tensor

    first = requests[0]
    family = of_pipeline(pipe)
    channels, h, w = family.noise_shape(pipe, first.width, first.height)
    dtype = family.denoiser(pipe).dtype
    latents = randn_tensor((len(gens), channels, h, w), generator=gens, device=torch.device("cpu"), dtype=torch.float32)
    row = 0
    for r in requests:
        for seed in r.seeds:
            if r.chaos:
                g = torch.Generator("cpu").manual_seed(seed ^ CHAOS_SALT)
                coarse = torch.randn(1, channels, 2, 2, generator=g)
                field = torch.nn.functional.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
                amount = CHAOS_LOW_FREQ * r.chaos / 100
                latents[row] = (latents[row] + amount * field[0]) / (1 + amount**2) ** 0.5
            row += 1
    return family.pack(pipe, latents).to(pipe._execution_device, dtype)


def size_kwargs(pipe: Any, width: int, height: int) -> dict[str, int]:
    """`height`/`width` for an image-to-image pipeline that takes them (Flux's draws at 1024 px unless
    told); SD's and SDXL's take the size from the image, and get nothing."""
    parameters = inspect.signature(pipe.__call__).parameters
    return {"height": height, "width": width} if "height" in parameters else {}


@dataclass
class StepState:
    total: int  # steps this batch runs (after --stop)
    full: int  # steps it would run without --stop
    on_step: StepCallback | None
    cancelled: bool = False
    last_t: Any = None
    cond: dict[str, torch.Tensor] = field(default_factory=dict)  # for the x0 estimate after --stop
    size: tuple[int, int] | None = None  # (width, height) of the images: Flux's packed latents need it
    embeds: dict[str, torch.Tensor] = field(default_factory=dict)  # what the callback does not pass back
    style: StyleTarget | None = None  # --sref: the latents are moved toward it after every step

    def tensor_inputs(self, pipe: Any) -> list[str]:
        wanted = ["latents", "prompt_embeds", "pooled_prompt_embeds", "add_text_embeds", "add_time_ids"]
        return [k for k in wanted if k in pipe._callback_tensor_inputs]

    def __call__(self, pipe: Any, i: int, t: Any, kwargs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        step = i + 1
        if self.on_step is not None:
            latents = kwargs["latents"]
            if self.size is not None:
                latents = of_pipeline(pipe).unpack(pipe, latents, *self.size)
            if self.on_step(step, self.total, latents):
                self.cancelled = True
                pipe._interrupt = True
        changed = {}
        if self.style is not None and self.size is not None:
            changed["latents"] = self.style.step(pipe, kwargs["latents"], t, self.size)
        if step >= self.total and self.total < self.full:
            self.last_t = t
            self.cond = {**self.embeds, **{k: v for k, v in kwargs.items() if k != "latents"}}
            pipe._interrupt = True
        return changed


def step_state(
    steps_run: int,
    stop: int,
    on_step: StepCallback | None,
    *,
    size: tuple[int, int] | None = None,
    embeds: dict[str, torch.Tensor] | None = None,
    style: StyleTarget | None = None,
) -> StepState:
    """`size` (width, height) and `embeds` let previews and --stop work on any family (Flux needs both);
    `style`: --sref's target (engine/actions/style.py), applied after every step."""
    return StepState(
        total=steps_for_stop(steps_run, stop),
        full=steps_run,
        on_step=on_step,
        size=size,
        embeds=dict(embeds or {}),
        style=style,
    )


@torch.no_grad()
def estimate_x0(pipe: Any, latents: torch.Tensor, state: StepState, guidance: float) -> torch.Tensor:
    """After --stop, `latents` still hold noise: one more denoiser pass predicts the clean latents.

    Decoding x_t directly would show the noise; Midjourney's --stop shows a soft, unfinished image.
    The family knows its denoiser and its parametrisation (epsilon, v, flow velocity).
    """
    timesteps = list(pipe.scheduler.timesteps)
    index = next(k for k, t in enumerate(timesteps) if t == state.last_t) + 1
    return of_pipeline(pipe).estimate_x0(pipe, latents, timesteps[index], state.cond, guidance, state.size)


def finish(
    pipe: Any,
    latents: torch.Tensor,
    state: StepState,
    guidance: float,
    safety_checker: bool,
    size: tuple[int, int],
) -> list[Image.Image]:
    """What every action does after its denoising call, in one place so the actions cannot drift
    apart: stop if the render was cancelled, predict the clean image after `--stop` (instead of
    decoding noise), and decode (`size`: the images' pixel size)."""
    if state.cancelled:
        raise RenderInterrupted
    if state.last_t is not None:
        latents = estimate_x0(pipe, latents, state, guidance)
    return decode(pipe, latents, safety_checker, size)


@contextlib.contextmanager
def seamless(pipe: Any, enabled: bool) -> Iterator[None]:
    """Circular padding in every padded conv of the UNet and VAE, restored afterwards.

    With it the network sees the image on a torus, so the output tiles seamlessly. The worker
    thread renders one batch at a time, so no other request ever sees the patched modules.
    """
    if not enabled:
        yield
        return
    family = of_pipeline(pipe)
    reason = family.supports(Feature.TILE)
    if reason is not None:
        raise ValueError(reason)
    patched: list[tuple[torch.nn.Conv2d, Any]] = []
    try:
        for model in (family.denoiser(pipe), pipe.vae):
            for module in model.modules():
                if (
                    isinstance(module, torch.nn.Conv2d)
                    and module.padding != "valid"
                    and any(int(p) > 0 for p in module.padding)
                ):
                    patched.append((module, module.padding_mode))
                    module.padding_mode = "circular"
        yield
    finally:
        for module, mode in patched:
            module.padding_mode = mode


FLAGGED = "dreamgrid_flagged"  # key in a decoded image's .info: the safety checker's verdict


@torch.no_grad()
def decode(
    pipe: Any, latents: torch.Tensor, run_safety_checker: bool, size: tuple[int, int] | None = None
) -> list[Image.Image]:
    """Latents -> Pillow images; float32 where the VAE asks for it (SDXL), tile by tile when large.

    `size` (width, height) unpacks a family's packed latents (Flux) first."""
    family = of_pipeline(pipe)
    if size is not None:
        latents = family.unpack(pipe, latents, *size)
    image = family.decode_vae(pipe, latents)
    flags = [False] * image.shape[0]
    if run_safety_checker and getattr(pipe, "safety_checker", None) is not None:
        # diffusers blacks out what it flags; we keep the pixels (the bot posts them as spoilers)
        # and only record the verdict.
        _, nsfw = pipe.run_safety_checker(image.clone(), image.device, family.denoiser(pipe).dtype)
        flags = [bool(flagged) for flagged in nsfw]
    images = pipe.image_processor.postprocess(image, output_type="pil")
    for picture, flagged in zip(images, flags, strict=True):
        picture.info[FLAGGED] = flagged
    return images


def split(images: Sequence[Image.Image], requests: Sequence[RenderRequest]) -> list[list[Image.Image]]:
    out, row = [], 0
    for r in requests:
        out.append(list(images[row : row + len(r.seeds)]))
        row += len(r.seeds)
    return out


def binary_mask(mask: Image.Image) -> Image.Image:
    """The mask as diffusers reads it: white (draw) from 128 up, black (keep) below."""
    return mask.convert("L").point(lambda v: 255 if v >= 128 else 0)


def check_mask(request: RenderRequest, what: str) -> None:
    """What outpainting and inpainting need on top of check_source: a mask of the request's size
    that keeps some of the picture and draws some, and no --stop or --tile."""
    if request.mask_image is None:
        raise ValueError(f"{what} needs mask_image (white: draw, black: keep)")
    if request.mask_image.size != (request.width, request.height):
        raise ValueError(
            f"mask_image is {request.mask_image.width}x{request.mask_image.height} "
            f"but the request is {request.width}x{request.height}"
        )
    low, high = binary_mask(request.mask_image).getextrema()
    if high == 0:
        raise ValueError(f"the mask of {what} is all black: there is nothing to draw")
    if low == 255:
        raise ValueError(f"the mask of {what} is all white: nothing of the picture would be kept")
    if request.stop != 100:
        raise ValueError(f"{what} finishes the picture: --stop does not apply, got {request.stop}")
    if request.tile:
        raise ValueError(f"{what} edits a picture in place: --tile does not apply")


def feather_radius(width: int, height: int) -> int:
    """Half the width of the blend band at a seam: 2 px on a 64 px tile, 16 px at 512."""
    return max(1, round(min(width, height) / 32))


def feather_inside(mask: Image.Image, radius: int) -> Image.Image:
    """A soft copy of `mask`'s white region: 0 on and outside its edge, ramping to 255 over
    2·radius pixels inside it. Blending through it leaves everything outside exactly as it was."""
    shrunk = binary_mask(mask).filter(ImageFilter.MinFilter(2 * radius + 1))
    return shrunk.filter(ImageFilter.BoxBlur(radius))


def paste_kept(
    images: Sequence[Image.Image], requests: Sequence[RenderRequest], drawn: Sequence[Image.Image]
) -> list[Image.Image]:
    """Each decoded image over its request's `init_image`, through `drawn` (one alpha per request:
    255 shows the new drawing, 0 the kept picture exactly). The safety checker's verdict (`info`) stays."""
    rows = [
        (source, alpha)
        for source, alpha, r in zip((source_of(r).convert("RGB") for r in requests), drawn, requests, strict=True)
        for _ in r.seeds
    ]
    out = []
    for picture, (source, alpha) in zip(images, rows, strict=True):
        blended = Image.composite(picture, source, alpha)
        blended.info.update(picture.info)
        out.append(blended)
    return out
