"""The GPU fast path, measured: plain diffusers vs the engine with each speed switch, side by side.

    python -m bench.gpu_bench                        # CUDA: SD1.5 at 512², SDXL, Flux.1, Flux.2 [klein] at 1024²
    python -m bench.gpu_bench --full-compile         # also COMPILE=full
    python -m bench.gpu_bench --device cpu --smoke   # tiny shapes, 2 steps: the code path, not a timing

Both pipelines are built from config with random weights (no download): random weights cost exactly
what trained ones do; the pictures are noise. One run is sized for under 5 minutes on an H100 (an
estimate until it is first run on one).

For each model it renders a 4-tile grid (25 steps, classifier-free guidance) with:
- plain diffusers in half precision (its defaults, SDPA included): four single calls, then one batched call;
- the engine (engine/core.py) in half precision with the switches added one at a time:
  SDPA, channels-last, fused QKV, then COMPILE=regional (static shapes, warmed up for the tile size)
  and, with --full-compile, COMPILE=full.
Contenders are interleaved, each figure the median of --repeats. It prints one markdown table per
model: seconds per grid, speed-up over plain diffusers' batched call, the fraction of the card's
dense half-precision peak reached (UNet FLOPs counted with torch's FlopCounterMode), peak memory
above what was allocated before the call, and "Δ pixels": the mean absolute difference (8-bit levels)
of the contender's grid from the engine's unswitched one, so a switch that changes pictures shows.
VAE tiling is not a contender: grids are never tiled (only images over twice a tile's area are).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import gc
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from engine.core import DiffusersEngine  # noqa: E402
from engine.optimize import Speedups  # noqa: E402
from engine.requests import Action, RenderRequest  # noqa: E402

PROMPT = "a red circle on a blue background"
SEEDS = (1, 2, 3, 4)
GUIDANCE = 7.5

# Dense (no sparsity) float16/bfloat16 tensor-core peaks, TFLOP/s, from the vendors' datasheets.
PEAK_TFLOPS = {
    "H200": 989.0,
    "GH200": 989.0,
    "H100 NVL": 835.0,
    "H100 PCIe": 756.0,
    "H100": 989.0,  # SXM ("H100 80GB HBM3")
    "A100": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
    "RTX 4090": 165.0,
}

# The engine's contenders: switches added one at a time (half precision is always on).
LADDER: tuple[tuple[str, Speedups], ...] = (
    ("engine, half precision", Speedups(sdpa=False, channels_last=False, fuse_qkv=False)),
    ("+ SDPA", Speedups(channels_last=False, fuse_qkv=False)),
    ("+ channels-last", Speedups(fuse_qkv=False)),
    ("+ fused QKV", Speedups()),
    ("+ COMPILE=regional", Speedups(compile="regional")),
)
FULL_COMPILE = ("+ COMPILE=full (instead of regional)", Speedups(compile="full"))


def peak_tflops(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tflops for key, tflops in PEAK_TFLOPS.items() if key in name), None)


def build_sd15(device: torch.device, dtype: torch.dtype) -> Any:
    """SD1.5's architecture (UNet 860M, KL VAE f8, CLIP ViT-L/14 text tower) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.tiny import TINY_WORDS
    from engine.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_WORDS)
    with torch.device(device):
        text_encoder = CLIPTextModel(_clip_config(CLIPTextConfig, tokenizer, 768, 12, 12))
        unet = UNet2DConditionModel(
            sample_size=64,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = _sd_vae(AutoencoderKL, scaling_factor=0.18215)
    scheduler = DDIMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _finish(pipe, device, dtype)


def build_sdxl(device: torch.device, dtype: torch.dtype) -> Any:
    """SDXL base's architecture (UNet 2.6B, CLIP-L + OpenCLIP bigG, VAE asking for float32) with random weights."""
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.tiny import TINY_WORDS
    from engine.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_WORDS)
    with torch.device(device):
        text_encoder = CLIPTextModel(_clip_config(CLIPTextConfig, tokenizer, 768, 12, 12))
        text_encoder_2 = CLIPTextModelWithProjection(
            _clip_config(CLIPTextConfig, tokenizer, 1280, 32, 20, projection_dim=1280, hidden_act="gelu")
        )
        unet = UNet2DConditionModel(
            sample_size=128,
            block_out_channels=(320, 640, 1280),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
            layers_per_block=2,
            transformer_layers_per_block=(1, 2, 10),
            attention_head_dim=(5, 10, 20),
            use_linear_projection=True,
            cross_attention_dim=2048,
            addition_embed_type="text_time",
            addition_time_embed_dim=256,
            projection_class_embeddings_input_dim=2816,
        )
        vae = _sd_vae(AutoencoderKL, scaling_factor=0.13025, sample_size=1024, force_upcast=True)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        add_watermarker=False,
    )
    return _finish(pipe, device, dtype)


def _clip_config(cls: Any, tokenizer: Any, hidden: int, layers: int, heads: int, **extra: Any) -> Any:
    return cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=4 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        max_position_embeddings=77,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )


def _sd_vae(cls: Any, **extra: Any) -> Any:
    return cls(
        block_out_channels=(128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2,
        latent_channels=4,
        **{"sample_size": 512, **extra},
    )


def _finish(pipe: Any, device: torch.device, dtype: torch.dtype) -> Any:
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_flux(device: torch.device, dtype: torch.dtype) -> Any:
    """Flux.1 [dev]'s architecture (a 12B DiT of 19 double and 38 single stream blocks, CLIP-L, T5-XXL,
    a 16-channel VAE) with random weights."""
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxPipeline, FluxTransformer2DModel
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    from engine.tiny import TINY_WORDS
    from engine.tokenizer import build_t5_tokenizer, build_tokenizer

    torch.manual_seed(0)
    tokenizer, t5_tokenizer = build_tokenizer(TINY_WORDS), build_t5_tokenizer(TINY_WORDS, model_max_length=512)
    with torch.device(device):
        text_encoder = CLIPTextModel(_clip_config(CLIPTextConfig, tokenizer, 768, 12, 12))
        text_encoder_2 = T5EncoderModel(
            T5Config(vocab_size=len(t5_tokenizer), d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64)
        ).to(dtype)
        transformer = FluxTransformer2DModel(guidance_embeds=True).to(dtype)  # its defaults are [dev]'s
        vae = _sd_vae(
            AutoencoderKL,
            latent_channels=16,
            scaling_factor=0.3611,
            shift_factor=0.1159,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15)
    pipe = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    return _finish(pipe, device, dtype)


def build_flux2_klein(device: torch.device, dtype: torch.dtype) -> Any:
    """Flux.2 [klein] 4B's shape as published (5 double and 20 single stream blocks of width 3072 over
    32-channel latents, a Qwen3-4B text encoder read at three layers) with random weights; an estimate
    of the shape until checked against the released configs."""
    from diffusers import (
        AutoencoderKLFlux2,
        FlowMatchEulerDiscreteScheduler,
        Flux2KleinPipeline,
        Flux2Transformer2DModel,
    )
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from engine.tiny import TINY_WORDS
    from engine.tokenizer import build_chat_tokenizer

    torch.manual_seed(0)
    tokenizer = build_chat_tokenizer(TINY_WORDS, model_max_length=512)
    with torch.device(device):
        text_encoder = Qwen3ForCausalLM(
            Qwen3Config(
                vocab_size=len(tokenizer),
                hidden_size=2560,
                intermediate_size=9728,
                num_hidden_layers=36,
                num_attention_heads=32,
                num_key_value_heads=8,
                head_dim=128,
                pad_token_id=tokenizer.pad_token_id,
            )
        ).to(dtype)
        transformer = Flux2Transformer2DModel(
            in_channels=128,
            num_layers=5,
            num_single_layers=20,
            attention_head_dim=128,
            num_attention_heads=24,
            joint_attention_dim=3 * 2560,
            axes_dims_rope=(32, 32, 32, 32),
            guidance_embeds=False,
        ).to(dtype)
        vae = AutoencoderKLFlux2()
    pipe = Flux2KleinPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
    return _finish(pipe, device, dtype)


def build_tiny_sd15(device: torch.device, dtype: torch.dtype) -> Any:
    from engine.tiny import build_tiny_pipeline

    return _finish(build_tiny_pipeline(), device, dtype)


def build_tiny_sdxl(device: torch.device, dtype: torch.dtype) -> Any:
    from engine.tiny import build_tiny_sdxl_pipeline

    return _finish(build_tiny_sdxl_pipeline(), device, dtype)


def build_tiny_flux(device: torch.device, dtype: torch.dtype) -> Any:
    from engine.tiny import build_tiny_flux_pipeline

    return _finish(build_tiny_flux_pipeline(), device, dtype)


def build_tiny_flux2_klein(device: torch.device, dtype: torch.dtype) -> Any:
    from engine.tiny import build_tiny_flux2_klein_pipeline

    return _finish(build_tiny_flux2_klein_pipeline(), device, dtype)


def plain_kwargs(pipe: Any) -> dict[str, Any]:
    """What plain diffusers needs besides the prompt to read it as the engine does (the family's)."""
    from engine.family import of_pipeline

    return of_pipeline(pipe).prompt_kwargs(pipe)


@dataclass
class Figure:
    seconds: list[float]
    images: list[Any]
    peak_bytes: int = 0


async def _images(render: Any) -> list[Any]:
    return list((await render).images)


def mean_difference(a: list[Any], b: list[Any]) -> float:
    """Mean absolute difference in 8-bit levels: does a switch keep the pictures on this device?"""
    return float(
        np.mean(
            [np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).mean() for x, y in zip(a, b, strict=True)]
        )
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def unet_flops_per_grid(pipe: Any, tile: int, steps: int) -> float:
    """FLOPs of one grid's denoising: one counted denoiser step (the UNet's CFG-batched four tiles,
    or a transformer's) times `steps`."""
    from torch.utils.flop_counter import FlopCounterMode

    from engine.family import of_pipeline

    counted = {"flops": 0}

    def count(module: Any, args: Any, kwargs: Any) -> None:
        counter.__enter__()

    def stop(module: Any, args: Any, kwargs: Any, output: Any) -> None:
        counter.__exit__(None, None, None)
        counted["flops"] = counter.get_total_flops()

    counter = FlopCounterMode(display=False)
    denoiser = of_pipeline(pipe).denoiser(pipe)
    handles = [
        denoiser.register_forward_pre_hook(count, with_kwargs=True),
        denoiser.register_forward_hook(stop, with_kwargs=True),
    ]
    try:
        pipe(
            prompt=[PROMPT] * len(SEEDS),  # by name: klein's first argument is its reference images
            height=tile,
            width=tile,
            num_inference_steps=1,
            output_type="latent",
            **plain_kwargs(pipe),
        )
    finally:
        for handle in handles:
            handle.remove()
    return float(counted["flops"]) * steps


async def measure(model: str, builder: Callable[..., Any], args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32  # fp16 on CPU is ~8x slower
    tile, steps, repeats = (
        args.tile or (64 if args.smoke else 512 if model == "SD1.5" else 1024),
        args.steps,
        args.repeats,
    )
    ladder = list(LADDER) + ([FULL_COMPILE] if args.full_compile else [])
    backend = "eager" if device.type == "cpu" else "inductor"  # CPU: trace only (a smoke run, not codegen)

    started = time.perf_counter()
    plain = builder(device, dtype)
    flops = unet_flops_per_grid(plain, tile, steps)

    def request() -> RenderRequest:
        return RenderRequest(
            action=Action.IMAGINE,
            prompt=PROMPT,
            seeds=SEEDS,
            width=tile,
            height=tile,
            steps=steps,
            guidance_scale=GUIDANCE,
        )

    def naive() -> list[Any]:
        images = []
        for seed in SEEDS:
            generator = torch.Generator("cpu").manual_seed(seed)
            images += plain(
                prompt=PROMPT,
                height=tile,
                width=tile,
                num_inference_steps=steps,
                guidance_scale=GUIDANCE,
                generator=generator,
                **plain_kwargs(plain),
            ).images
        return images

    def batched() -> list[Any]:
        generators = [torch.Generator("cpu").manual_seed(s) for s in SEEDS]
        return plain(
            prompt=[PROMPT] * 4,
            height=tile,
            width=tile,
            num_inference_steps=steps,
            guidance_scale=GUIDANCE,
            generator=generators,
            **plain_kwargs(plain),
        ).images

    contenders: dict[str, Callable[[], Any]] = {
        "diffusers, 4 single calls": lambda: asyncio.to_thread(naive),
        "diffusers, one batched call": lambda: asyncio.to_thread(batched),
    }
    async with contextlib.AsyncExitStack() as stack:
        for name, speedups in ladder:
            speedups = dataclasses.replace(speedups, compile_backend=backend)
            engine = DiffusersEngine(
                model=name,
                pipelines={name: builder(device, dtype)},
                device=args.device,
                dtype=dtype,
                batch_window_s=0.0,
                speedups=speedups,
                warm_up_sizes=[(tile, tile)],
            )
            await stack.enter_async_context(engine)
            contenders[name] = lambda engine=engine: _images(engine.render(request()))
        print(f"built and warmed up {len(contenders)} contenders in {time.perf_counter() - started:.0f} s")

        # warm-up (allocator, cuDNN autotune, oneDNN primitives), and each contender's pictures
        figures = {name: Figure([], await run()) for name, run in contenders.items()}
        for _ in range(repeats):
            for name, run in contenders.items():
                _sync(device)
                if device.type == "cuda":
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                t = time.perf_counter()
                await run()
                _sync(device)
                figures[name].seconds.append(time.perf_counter() - t)
                if device.type == "cuda":
                    peak = torch.cuda.max_memory_allocated(device) - before
                    figures[name].peak_bytes = max(figures[name].peak_bytes, peak)

    print_table(model, tile, steps, dtype, device, flops, figures, peak_tflops(device, args.peak_tflops), args)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def print_table(
    model: str,
    tile: int,
    steps: int,
    dtype: torch.dtype,
    device: torch.device,
    flops: float,
    figures: dict[str, Figure],
    peak: float | None,
    args: argparse.Namespace,
) -> None:
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    peak_text = f"dense fp16 peak {peak:.0f} TFLOP/s" if peak else "peak unknown: pass --peak-tflops"
    print()
    print(
        f"**{model}-shaped, 4 x {tile}x{tile}, {steps} steps, guidance {GUIDANCE}, "
        f"{str(dtype).removeprefix('torch.')}, {card} ({peak_text}); "
        f"UNet work {flops / 1e12:.3g} TFLOP per grid; median of {args.repeats}"
        + (" — SMOKE RUN, not a measurement" if args.smoke else "")
        + "**"
    )
    print()
    columns = (
        "s per grid",
        "vs diffusers batched",
        "UNet TFLOP/s",
        "% of peak",
        "memory peak over weights",
        "Δ pixels",
    )
    print(f"| contender | {' | '.join(columns)} |")
    print("|---|---|---|---|---|---|---|")
    baseline = statistics.median(figures["diffusers, one batched call"].seconds)
    unswitched = figures[LADDER[0][0]].images
    for name, figure in figures.items():
        seconds = statistics.median(figure.seconds)
        achieved = flops / seconds / 1e12
        share = f"{100 * achieved / peak:.0f} %" if peak else "—"
        memory = f"{figure.peak_bytes / 2**30:.1f} GiB" if figure.peak_bytes else "—"
        delta = mean_difference(figure.images, unswitched)
        cells = (name, f"{seconds:.3f}", f"{baseline / seconds:.2f}x", f"{achieved:.3g}", share, memory, f"{delta:.2f}")
        print(f"| {' | '.join(cells)} |")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument(
        "--models", default="sd15,sdxl,flux,flux2-klein", help="comma-separated: sd15, sdxl, flux, flux2-klein"
    )
    parser.add_argument("--tile", type=int, help="tile side (default 512 for SD1.5, else 1024; 64 with --smoke)")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--full-compile", action="store_true", help="also COMPILE=full (a longer compile)")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense fp16 peak, if not in the table")
    parser.add_argument("--smoke", action="store_true", help="tiny models, 2 steps, 1 repeat: checks the code path")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu --smoke")
    if args.smoke:
        args.steps, args.repeats = 2, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    from diffusers.utils import logging as diffusers_logging

    diffusers_logging.set_verbosity_error()  # it warns on every dtype cast of a model built from config
    builders = {
        "sd15": ("SD1.5", build_tiny_sd15 if args.smoke else build_sd15),
        "sdxl": ("SDXL", build_tiny_sdxl if args.smoke else build_sdxl),
        "flux": ("Flux.1", build_tiny_flux if args.smoke else build_flux),
        "flux2-klein": ("Flux.2 [klein]", build_tiny_flux2_klein if args.smoke else build_flux2_klein),
    }
    for key in args.models.split(","):
        if key not in builders:
            raise SystemExit(f"--models: unknown model {key!r} ({', '.join(builders)})")
        model, builder = builders[key]
        asyncio.run(measure(model, builder, args))


if __name__ == "__main__":
    main()
