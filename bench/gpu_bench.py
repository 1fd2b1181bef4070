"""The engine benchmarks on an SD1.5-architecture model with random weights (no download), for a GPU box.

    TRANSFORMERS_VERBOSITY=error python -m bench.gpu_bench                   # CUDA, 512 px tiles, 20 steps
    TRANSFORMERS_VERBOSITY=error python -m bench.gpu_bench --compile         # with torch.compile on the UNet
    TRANSFORMERS_VERBOSITY=error python -m bench.gpu_bench --device cpu --tile 64 --steps 2 --repeats 1 --threads 1

Same three ratios as bench/engine_bench.py, plus plain diffusers it/s at batch 1 (reference: ~55 it/s
on an H100 at 512 px, DESIGN.md). Random weights cost exactly what trained ones do; the pictures are noise.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from bench.engine_bench import PROMPT, run_benchmarks  # noqa: E402


def build_sd15_random(device: torch.device, dtype: torch.dtype) -> object:
    """SD1.5's architecture (UNet 860M, KL VAE f8, CLIP ViT-L/14 text tower) with random weights."""
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from engine.tiny import TINY_WORDS
    from engine.tokenizer import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(TINY_WORDS)
    with torch.device(device):
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=768,
                intermediate_size=3072,
                num_hidden_layers=12,
                num_attention_heads=12,
                max_position_embeddings=77,
                projection_dim=768,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=64,
            in_channels=4,
            out_channels=4,
            block_out_channels=(320, 640, 1280, 1280),
            down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
            layers_per_block=2,
            cross_attention_dim=768,
            attention_head_dim=8,
        )
        vae = AutoencoderKL(
            block_out_channels=(128, 256, 512, 512),
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
            scaling_factor=0.18215,
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
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
    pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def its_per_second(pipe: object, tile: int, steps: int, device: torch.device) -> float:
    """Plain diffusers, batch 1: UNet steps per second (the number people quote)."""
    pipe(PROMPT, height=tile, width=tile, num_inference_steps=steps)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    started = time.perf_counter()
    pipe(PROMPT, height=tile, width=tile, num_inference_steps=steps, output_type="latent")
    if device.type == "cuda":
        torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="fp16", choices=("fp16", "bf16", "fp32"))
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="torch.compile the UNet first")
    parser.add_argument("--threads", type=int, help="torch CPU threads (a smoke run on shared cores: 1)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device here: run on a GPU machine, or pass --device cpu for a smoke run")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[args.dtype]
    if device.type == "cpu":
        dtype = torch.float32  # fp16 on CPU is ~8x slower (DESIGN.md)
    started = time.perf_counter()
    pipe = build_sd15_random(device, dtype)
    if args.compile:
        pipe.unet = torch.compile(pipe.unet)
    name = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    print(f"built SD1.5-architecture pipeline on {name} ({dtype}) in {time.perf_counter() - started:.1f} s")
    print(f"plain diffusers, batch 1, {args.tile}px: {its_per_second(pipe, args.tile, args.steps, device):.1f} it/s")
    asyncio.run(run_benchmarks(pipe, tile=args.tile, steps=args.steps, repeats=args.repeats, device=args.device))


if __name__ == "__main__":
    main()
