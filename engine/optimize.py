"""How a loaded pipeline is made fast: one switch per technique, each of which can be turned off.

| switch (setting)              | what it does                                                  | default |
|-------------------------------|---------------------------------------------------------------|---------|
| half precision (`DTYPE`)      | float16 on CUDA (engine/core.py); SDXL's VAE upcast kept      | on CUDA |
| `sdpa` (`SDPA`)               | PyTorch's scaled_dot_product_attention (flash/mem-efficient)  | on      |
| `channels_last` (`CHANNELS_LAST`) | NHWC memory format for the UNet's and VAE's convolutions  | on      |
| `fuse_qkv` (`FUSE_QKV`)       | one matmul for Q, K and V (K and V in cross-attention)        | on      |
| `compile` (`COMPILE`)         | off / regional (the UNet's transformer blocks) / full UNet    | off     |
| `static_shapes` (`STATIC_SHAPES`) | one graph per tile size and batch size, warmed up at start | on     |
| `vae_tiling` (`VAE_TILING`)   | large images (upscales) decode tile by tile (engine/vae.py)   | on      |

Every switch keeps the images: tests/engine/test_optimize.py renders with each one on and off on CPU
and states the tolerance. bench/gpu_bench.py measures what each is worth on a GPU.

Static shapes: a compiled graph is specialised to its input shapes. Members only ever ask for the
tile sizes `params.aspect_buckets` lists (one per aspect ratio the prompt parser allows), so those are
compiled at start (`warm_up`, for a 4-tile grid with guidance), each with its own graph
(`dynamic=False`). The batch dimension varies with how many jobs share a call; `padded_image_count`
rounds it up to a power of two (the engine adds throw-away rows), so a handful of graphs serve every
batch instead of a recompile per new size. A batch size or shape not seen before (several members'
grids in one call, an upscale, guidance off) compiles once, the first time it comes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch

from engine.vae import TILING_ALLOWED, is_video_vae

log = logging.getLogger(__name__)

CompileMode = Literal["off", "regional", "full"]
COMPILE_MODES: tuple[CompileMode, ...] = ("off", "regional", "full")

# Images per grid, and the steps a warm-up render runs (shapes, not steps, decide what compiles).
WARM_UP_IMAGES = 4
WARM_UP_STEPS = 2
WARM_UP_PROMPT = "warm-up"

# One graph per (tile size, batch size, UNet level): far above torch's default of 8 per function.
RECOMPILE_LIMIT = 1024


@dataclass(frozen=True, slots=True)
class Speedups:
    """The switches `prepare_pipeline` applies (half precision is the engine's `dtype`)."""

    sdpa: bool = True
    channels_last: bool = True
    fuse_qkv: bool = True
    compile: CompileMode = "off"
    static_shapes: bool = True
    vae_tiling: bool = True
    # torch.compile backend: "inductor" generates kernels; tests trace with "eager" (no codegen on CPU).
    compile_backend: str = "inductor"

    def __post_init__(self) -> None:
        if self.compile not in COMPILE_MODES:
            raise ValueError(f"compile must be one of {', '.join(COMPILE_MODES)}, got {self.compile!r}")

    @property
    def pads_batches(self) -> bool:
        return self.compile != "off" and self.static_shapes


def prepare_pipeline(pipe: Any, speedups: Speedups) -> None:
    """Apply the switches to a pipeline already on its device and dtype (modules are changed in place,
    so pipelines made from it with `from_pipe` share them)."""
    from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0, FusedAttnProcessor2_0

    from engine.family import of_pipeline

    family = of_pipeline(pipe)
    unet, vae = family.denoiser(pipe), pipe.vae  # a UNet, or a transformer (SD3, Flux)

    # 1. attention: SDPA is diffusers' default on torch 2; off means the classic matmul-softmax path
    #    (a transformer family's attention has processors of its own, always on SDPA)
    if not speedups.sdpa:
        if family.denoiser_name == "unet":
            unet.set_attn_processor(AttnProcessor())
        vae.set_attn_processor(AttnProcessor())

    # 2. fused QKV projections (diffusers' fused processor runs on SDPA)
    if speedups.fuse_qkv:
        if not speedups.sdpa:
            log.info("FUSE_QKV needs SDPA; attention projections stay separate")
        else:
            for model in (unet, vae):
                processors = set(map(type, getattr(model, "attn_processors", {}).values()))  # (Z-Image has none)
                if processors <= {AttnProcessor2_0} and hasattr(model, "fuse_qkv_projections"):
                    model.fuse_qkv_projections()
                elif processors and processors != {FusedAttnProcessor2_0}:  # (not fused already)
                    names = ", ".join(sorted(p.__name__ for p in processors))
                    log.info("%s has custom attention (%s); its projections stay separate", type(model).__name__, names)

    # 3. channels-last: cuDNN's fastest convolutions want NHWC
    if speedups.channels_last:
        unet.to(memory_format=torch.channels_last)
        if not is_video_vae(vae):  # (Qwen-Image's mixes 2D and 3D convolutions: no one layout fits both)
            vae.to(memory_format=torch.channels_last)

    # 4. VAE tiling: engine/vae.py tiles large images only, and only where allowed
    setattr(vae, TILING_ALLOWED, speedups.vae_tiling)

    # 5. torch.compile, in place so the denoiser keeps its type (and its config)
    if speedups.compile != "off":
        if speedups.static_shapes:
            torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, RECOMPILE_LIMIT)
            torch._dynamo.config.accumulated_recompile_limit = max(
                torch._dynamo.config.accumulated_recompile_limit, RECOMPILE_LIMIT
            )
        options: dict[str, Any] = {
            "fullgraph": True,
            "dynamic": False if speedups.static_shapes else None,
            "backend": speedups.compile_backend,
        }
        if speedups.compile == "regional":
            unet.compile_repeated_blocks(**options)  # each transformer block, compiled once per shape
        else:
            unet.compile(**options)


def padded_image_count(images: int, max_batch: int) -> int:
    """The batch size (in images) a compiled graph exists for: the next power of two, at most max_batch."""
    padded = 1
    while padded < images:
        padded *= 2
    return max(images, min(padded, max_batch))


@torch.no_grad()
def warm_up(pipe: Any, sizes: Iterable[tuple[int, int]], *, guidance_scale: float = 7.5) -> float:
    """Render one grid per tile size so the compile happens now, not for the first member; returns seconds."""
    from engine.family import of_pipeline

    started = time.perf_counter()
    sizes = list(sizes)
    extra = of_pipeline(pipe).prompt_kwargs(pipe)  # e.g. the T5 length the engine reads
    for n, (width, height) in enumerate(sizes, 1):
        t = time.perf_counter()
        pipe(
            prompt=WARM_UP_PROMPT,
            **extra,
            num_images_per_prompt=WARM_UP_IMAGES,
            width=width,
            height=height,
            num_inference_steps=WARM_UP_STEPS,
            guidance_scale=guidance_scale,
            output_type="latent",
        )
        log.info("compiled for %dx%d tiles (%d/%d) in %.1f s", width, height, n, len(sizes), time.perf_counter() - t)
    return time.perf_counter() - started
