"""`dreamgrid train-motion` and `eval-motion`: the shipped motion model, trained from scratch on clips
of the training set's shapes sliding across their backgrounds, and judged from pixels.

Only the motion modules learn (engine/motion.py): the shipped image model is frozen, so its pictures
stay as they are and the modules learn how one frame follows the last. Every clip is drawn by
engine/training/dataset.py's drawer (the shape keeps its colour and size; it moves in a straight
line, in any direction), encoded once by the shipped VAE, and captioned as the training set is.
One CPU thread, a fixed seed: the same command gives the same weights.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from engine.training.dataset import COLOURS, SIZES, Scene, all_combos, caption, render

FRAMES = 16


@dataclass(frozen=True)
class MotionConfig:
    model: Path  # the shipped image model's folder
    out: Path  # where the MotionAdapter is saved
    steps: int = 450
    clips: int = 256
    batch: int = 4  # clips per step (each FRAMES frames)
    lr: float = 1e-3
    seed: int = 0
    threads: int = 1


def moving_clip(rng: random.Random, frames: int = FRAMES) -> tuple[list[Image.Image], Scene, tuple[float, float]]:
    """A shape sliding in a straight line: from one side of the picture towards the other."""
    shape, fg, bg = rng.choice(all_combos())
    size = rng.choice(list(SIZES))
    angle = rng.uniform(0, 2 * math.pi)
    travel = rng.uniform(10, 22)  # pixels from the first frame to the last, on a 64 px picture
    vx, vy = math.cos(angle) * travel, math.sin(angle) * travel
    start = Scene(shape, fg, bg, size, "center", round(-vx / 2), round(-vy / 2))
    clip = []
    for i in range(frames):
        f = i / (frames - 1)
        clip.append(render(dataclasses.replace(start, dx=round(start.dx + vx * f), dy=round(start.dy + vy * f))))
    return clip, start, (vx, vy)


def _pixels(images: list[Image.Image]) -> torch.Tensor:
    array = np.stack([np.asarray(image, dtype=np.float32) for image in images]) / 127.5 - 1
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def unet_digest(model: Path) -> str:
    """Which shipped UNet the motion model was trained for (its weights' SHA-256, first 16 hex digits)."""
    data = (model / "unet" / "diffusion_pytorch_model.safetensors").read_bytes()
    return hashlib.sha256(data).hexdigest()[:16]


def train_motion(cfg: MotionConfig) -> dict[str, Any]:
    from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline

    from engine.motion import in_motion, new_adapter
    from engine.vae import encode_pixels

    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    started = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(cfg.model, local_files_only=True, safety_checker=None)
    for part in (pipe.unet, pipe.vae, pipe.text_encoder):
        part.requires_grad_(False).eval()
    rng = random.Random(cfg.seed)

    # 1. the clips, encoded once: (clips, frames, 4, 8, 8) latents and one prompt embedding per clip
    latents, contexts = [], []
    with torch.no_grad():
        for _ in range(cfg.clips):
            clip, scene, _ = moving_clip(rng)
            latents.append(encode_pixels(pipe.vae, _pixels(clip)))
            embeds, _ = pipe.encode_prompt(caption(scene, rng), torch.device("cpu"), 1, False)
            contexts.append(embeds[0])
    data = torch.stack(latents)
    context = torch.stack(contexts)
    encoded_s = time.perf_counter() - started

    # 2. the motion modules learn the UNet's own objective on whole clips (every frame at one noise level)
    adapter = new_adapter(pipe.unet, seed=cfg.seed)
    adapter.train()
    optimiser = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, lambda s: min(1.0, (s + 1) / 100))
    scheduler = pipe.scheduler
    alphas = scheduler.alphas_cumprod
    generator = torch.Generator().manual_seed(cfg.seed)
    losses = []
    with in_motion(pipe.unet, adapter, FRAMES):
        for _ in range(cfg.steps):
            pick = torch.randint(0, len(data), (cfg.batch,), generator=generator)
            # (batch * frames, 4, 8, 8), contiguous: a strided input crashes the UNet's CPU backward
            x0 = data[pick].flatten(0, 1).contiguous()
            noise = torch.randn(x0.shape, generator=generator)
            t = torch.randint(0, scheduler.config.num_train_timesteps, (cfg.batch,), generator=generator)
            a = alphas[t].repeat_interleave(FRAMES).view(-1, 1, 1, 1)
            noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
            target = a.sqrt() * noise - (1 - a).sqrt() * x0  # v-prediction, as the shipped model was trained
            ehs = context[pick].repeat_interleave(FRAMES, dim=0)
            predicted = pipe.unet(noisy, t.repeat_interleave(FRAMES), encoder_hidden_states=ehs).sample
            loss = torch.nn.functional.mse_loss(predicted, target)
            optimiser.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(adapter.parameters(), 1.0)
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
    adapter.eval()
    cfg.out.mkdir(parents=True, exist_ok=True)
    adapter.save_pretrained(cfg.out, safe_serialization=True)
    report = {
        "trained_for_unet": unet_digest(cfg.model),
        "steps": cfg.steps,
        "clips": cfg.clips,
        "frames": FRAMES,
        "batch": cfg.batch,
        "seed": cfg.seed,
        "threads": cfg.threads,
        "loss_first_100": sum(losses[:100]) / max(1, len(losses[:100])),
        "loss_last_100": sum(losses[-100:]) / max(1, len(losses[-100:])),
        "encode_s": round(encoded_s, 1),
        "train_s": round(time.perf_counter() - started - encoded_s, 1),
    }
    (cfg.out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


# -- the eval: judged from pixels ----------------------------------------------------------------


def object_mask(frame: Image.Image, colour: tuple[int, int, int], tolerance: float = 80.0) -> np.ndarray:
    """The pixels within `tolerance` (RGB distance) of the object's colour."""
    array = np.asarray(frame.convert("RGB"), dtype=np.float32)
    return np.linalg.norm(array - np.asarray(colour, dtype=np.float32), axis=-1) < tolerance


def track(frames: list[Image.Image], colour: tuple[int, int, int]) -> dict[str, float]:
    """Where the object of `colour` is in each frame: its travel (pixels, first to farthest centroid)
    and the fewest of its pixels any frame keeps, as a share of the first frame's (it stays itself)."""
    masks = [object_mask(frame, colour) for frame in frames]
    areas = [int(mask.sum()) for mask in masks]
    centroids = [np.argwhere(mask).mean(axis=0) if mask.any() else None for mask in masks]
    first = centroids[0]
    travel = max(
        (float(np.linalg.norm(c - first)) for c in centroids if c is not None and first is not None), default=0
    )
    kept = min(areas) / areas[0] if areas[0] else 0.0
    return {"travel_px": travel, "kept_area": kept, "first_area": float(areas[0])}


def eval_motion(model: Path, motion: Path, *, clips: int = 8, seed: int = 0) -> dict[str, Any]:
    """Animate "red circle on a blue background" pictures of the shipped model and measure the clips."""
    import asyncio

    from engine.core import DiffusersEngine
    from engine.requests import Action, RenderRequest
    from engine.video import MOTION_FOLDER

    if motion.resolve() != MOTION_FOLDER.resolve():
        raise ValueError(f"the engine reads the motion model from {MOTION_FOLDER}")
    torch.set_num_threads(1)
    prompt = "red circle on a blue background"

    async def run() -> list[dict[str, float]]:
        results = []
        async with DiffusersEngine(model=str(model), device="cpu") as engine:
            pictures = await engine.render(
                RenderRequest(
                    action=Action.IMAGINE,
                    prompt=prompt,
                    seeds=tuple(range(seed, seed + clips)),
                    width=64,
                    height=64,
                    steps=20,
                    guidance_scale=5.0,
                )
            )
            for n, picture in enumerate(pictures.images):
                clip = await engine.render(
                    RenderRequest(
                        action=Action.ANIMATE,
                        prompt=prompt,
                        seeds=(seed + n,),
                        width=64,
                        height=64,
                        steps=20,
                        guidance_scale=5.0,
                        strength=0.8,
                        init_image=picture,
                    )
                )
                measured = track(list(clip.clips[0]), COLOURS["red"])
                measured["frames"] = len(clip.clips[0])
                results.append(measured)
        return results

    results = asyncio.run(run())
    moved = [r for r in results if r["travel_px"] >= 2.0 and r["kept_area"] >= 0.5]
    return {
        "prompt": prompt,
        "clips": len(results),
        "frames": min(r["frames"] for r in results),
        "moved_and_kept": len(moved),
        "mean_travel_px": sum(r["travel_px"] for r in results) / len(results),
        "mean_kept_area": sum(r["kept_area"] for r in results) / len(results),
        "trained_for_unet": unet_digest(model),
        "per_clip": results,
    }
