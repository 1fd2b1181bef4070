"""`/tune`: a LoRA on a model's UNet attention, trained from a moodboard of 5–30 pictures.

The pictures are centre-cropped to the model's tile, encoded once by its VAE, and a copy of its UNet
(without any LoRA the renders have loaded, attention unfused) gets a PEFT `LoraConfig` on every
attention projection (`to_q`, `to_k`, `to_v`, `to_out.0`). Training is the model's own objective
(epsilon or v-prediction, as its scheduler says) on noise at uniform timesteps, each picture with its
caption (what the engine's describer says it shows), dropped one time in ten: what the captions
name the model already draws, so the LoRA learns what the pictures share beyond it, and carries that
into any prompt. Every random draw comes from a generator seeded with (seed, step), so a run resumed from
its checkpoint continues exactly as an uninterrupted one would.

The result is a diffusers LoRA file (`save_lora_weights`), which `load_lora_weights` reads back.
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from engine.params import TUNE_MAX_PICTURES, TUNE_MIN_PICTURES, TUNE_STEPS

log = logging.getLogger(__name__)

TARGET_MODULES = ("to_q", "to_k", "to_v", "to_out.0")
CAPTION_DROPOUT = 0.1


class TuneCancelled(Exception):
    """The member cancelled: the checkpoint stays, so nothing is lost if they start again."""


@dataclass(frozen=True, slots=True)
class TuneSettings:
    steps: int = TUNE_STEPS
    rank: int = 8
    learning_rate: float = 6e-3
    batch: int = 8
    checkpoint_every: int = 50
    seed: int = 0


def picture_tensor(pictures: Sequence[Image.Image], size: int) -> torch.Tensor:
    """N x 3 x size x size in [-1, 1]: each picture centre-cropped to a square and resized."""
    arrays = []
    for picture in pictures:
        square = ImageOps.fit(picture.convert("RGB"), (size, size), Image.Resampling.LANCZOS)
        arrays.append(np.asarray(square, dtype=np.float32).transpose(2, 0, 1) / 127.5 - 1.0)
    return torch.from_numpy(np.stack(arrays))


def base_unet(unet: Any) -> Any:
    """A trainable copy of a pipeline's UNet: no compiled wrapper, no loaded LoRA, attention unfused."""
    unet = copy.deepcopy(getattr(unet, "_orig_mod", unet))
    if getattr(unet, "peft_config", None):
        unet.delete_adapters(list(unet.peft_config))
    if hasattr(unet, "peft_config"):  # an empty one left behind would make PEFT warn of "multiple adapters"
        del unet.peft_config
        unet._hf_peft_config_loaded = False
    if getattr(unet, "original_attn_processors", None) is not None:
        unet.unfuse_qkv_projections()
    return unet.float()


def lora_state(unet: Any) -> dict[str, torch.Tensor]:
    """The LoRA's weights in diffusers' naming, ready for `save_lora_weights(unet_lora_layers=…)`."""
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft.utils import get_peft_model_state_dict

    return convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))


def save_lora(pipeline_class: Any, unet: Any, path: str | os.PathLike[str]) -> Path:
    """Write the UNet's LoRA to `path` (a .safetensors file), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as folder:
        pipeline_class.save_lora_weights(
            save_directory=folder, unet_lora_layers=lora_state(unet), weight_name=path.name, safe_serialization=True
        )
        os.replace(Path(folder) / path.name, path)
    return path


def train_lora(
    pipe: Any,
    pictures: Sequence[Image.Image],
    output: str | os.PathLike[str],
    *,
    checkpoint: str | os.PathLike[str],
    settings: TuneSettings = TuneSettings(),
    captions: Sequence[str] = (),
    on_step: Callable[[int, int], bool] | None = None,
) -> Path:
    """Train a LoRA for `pipe`'s UNet on `pictures` and write it to `output`.

    `checkpoint`: where the run's state is saved every `settings.checkpoint_every` steps, and resumed
    from when it exists. `on_step(done, total)` is called after each step; False stops the run
    (`TuneCancelled`). Returns `output`.
    """
    from diffusers import DDPMScheduler
    from peft import LoraConfig
    from peft.utils import set_peft_model_state_dict

    if not TUNE_MIN_PICTURES <= len(pictures) <= TUNE_MAX_PICTURES:
        raise ValueError(f"a moodboard has {TUNE_MIN_PICTURES}–{TUNE_MAX_PICTURES} pictures, not {len(pictures)}")
    device = pipe.unet.device
    size = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
    with torch.no_grad():
        pixels = picture_tensor(pictures, size).to(device, pipe.vae.dtype)
        posterior = pipe.vae.encode(pixels).latent_dist
        means, stds = posterior.mean.float(), posterior.std.float()
        shift = getattr(pipe.vae.config, "shift_factor", None) or 0.0
        empty = pipe.encode_prompt([""], device, 1, False)[0].float()
        texts = list(captions) if len(captions) == len(pictures) else [""] * len(pictures)
        described = pipe.encode_prompt(texts, device, 1, False)[0].float()
    scaling = float(pipe.vae.config.scaling_factor)

    unet = base_unet(pipe.unet)
    unet.requires_grad_(False)
    config = LoraConfig(
        r=settings.rank, lora_alpha=settings.rank, init_lora_weights="gaussian", target_modules=list(TARGET_MODULES)
    )
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(settings.seed)  # the LoRA's starting weights too: the same run gives the same LoRA
        unet.add_adapter(config)
    trainable = [p for p in unet.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(trainable, lr=settings.learning_rate, weight_decay=1e-4)
    noise_schedule = DDPMScheduler.from_config(pipe.scheduler.config)
    prediction = noise_schedule.config.prediction_type
    start = 0
    checkpoint = Path(checkpoint)
    if checkpoint.exists():
        state = torch.load(checkpoint, map_location=device, weights_only=True)
        set_peft_model_state_dict(unet, state["lora"])
        optimiser.load_state_dict(state["optimiser"])
        start = int(state["step"])
        log.info("resumed a tune at step %d of %d from %s", start, settings.steps, checkpoint)

    unet.train()
    timesteps = int(noise_schedule.config.num_train_timesteps)
    for step in range(start, settings.steps):
        generator = torch.Generator().manual_seed(settings.seed * 1_000_003 + step)
        index = torch.randint(len(means), (settings.batch,), generator=generator)
        flip = torch.rand(settings.batch, generator=generator) < 0.5
        sample = means[index] + stds[index] * torch.randn(means[index].shape, generator=generator).to(device)
        sample = torch.where(flip.to(device)[:, None, None, None], sample.flip(-1), sample)
        latents = (sample - shift) * scaling
        noise = torch.randn(latents.shape, generator=generator).to(device)
        t = torch.randint(0, timesteps, (settings.batch,), generator=generator).to(device)
        noisy = noise_schedule.add_noise(latents, noise, t)  # type: ignore[arg-type]  # an IntTensor in its hints
        target = noise_schedule.get_velocity(latents, noise, t) if prediction == "v_prediction" else noise  # type: ignore[arg-type]
        # Each picture's caption, dropped one time in ten (so guidance's empty prompt learns the style too).
        dropped = (torch.rand(settings.batch, generator=generator) < CAPTION_DROPOUT).to(device)
        context = torch.where(dropped[:, None, None], empty.expand(settings.batch, -1, -1), described[index])
        loss = F.mse_loss(unet(noisy, t, context).sample.float(), target)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        done = step + 1
        if done % settings.checkpoint_every == 0 and done < settings.steps:
            _save_checkpoint(checkpoint, unet, optimiser, done)
        if on_step is not None and not on_step(done, settings.steps):
            raise TuneCancelled
    unet.eval()
    out = save_lora(type(pipe), unet, output)
    checkpoint.unlink(missing_ok=True)
    return out


def _save_checkpoint(path: Path, unet: Any, optimiser: torch.optim.Optimizer, step: int) -> None:
    from peft.utils import get_peft_model_state_dict

    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    torch.save({"lora": get_peft_model_state_dict(unet), "optimiser": optimiser.state_dict(), "step": step}, temporary)
    temporary.replace(path)
