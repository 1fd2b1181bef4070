"""`dreamgrid train`: a text-to-image latent diffusion model from scratch.

Stage 1 trains a small AutoencoderKL (reconstruction + KL) and caches every image's latent
distribution. Stage 2 trains a UNet2DConditionModel and a CLIP text encoder together on
noise added by the scheduler, dropping captions now and then so classifier-free guidance
works. The result is a plain StableDiffusionPipeline folder.

Every random draw of stage 2 comes from a generator seeded with (seed, step), so a resumed
run continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import cast

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..tokenizer import build_tokenizer
from .dataset import FolderDataset, SyntheticDataset, to_tensor_array
from .evaluate import DEFAULT_GUIDANCE, DEFAULT_STEPS, eval_cases, save_grid, score
from .models import make_sample_scheduler, make_text_encoder, make_train_scheduler, make_unet, make_vae

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    output: str = "engine/weights/dreamgrid-tiny"
    run_dir: str = "runs/dreamgrid-tiny"
    data: str | None = None  # a folder of captioned images; None = the synthetic dataset
    num_images: int = 12000
    image_size: int = 64
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    # stage 1
    vae_steps: int = 2000
    vae_batch: int = 16
    vae_crop: int = 32  # fully convolutional: crops train 4x faster than whole images
    vae_lr: float = 1e-3
    kl_weight: float = 1e-5
    vae_channels: tuple[int, ...] = (32, 64, 64, 64)
    # stage 1b: the decoder alone, on whole images (a 32 px crop rarely holds a whole shape, and the
    # stage-1 decoder rounded squares and triangles). The encoder stays as it is, so the latents
    # stage 2 learns, and so the UNet, do not change.
    decoder_steps: int = 1500
    decoder_batch: int = 16
    decoder_images: int = 4000
    decoder_lr: float = 5e-4
    # stage 2
    steps: int = 5000  # six shapes: v1 drew three at 4,000 (MODEL_CARD.md, fifth round)
    batch: int = 64
    lr: float = 5e-4
    text_lr: float = 1e-3  # the text encoder starts from nothing too; it may move faster
    warmup: int = 200
    caption_dropout: float = 0.1
    min_snr_gamma: float = 5.0
    # "uniform": timesteps drawn uniformly, each loss weighted by min-SNR. "importance": drawn half
    # uniformly and half in proportion to that weight, and re-weighted so the objective is the same
    # in expectation: most uniform draws land where min-SNR gives them almost no weight. The shipped
    # model's shapes on held-out prompts went from 69.8 % (uniform) to 95.8 % (MODEL_CARD.md).
    timesteps: str = "importance"
    ema_decay: float = 0.999
    text_hidden: int = 128
    text_layers: int = 3
    unet_channels: tuple[int, ...] = (64, 96, 96)
    vae: str | None = None  # a trained AutoencoderKL folder: stage 1 is skipped, its encoder fills the cache
    # with `vae`: stage 1b runs on its decoder too (otherwise it is skipped and the VAE ships as it
    # is). For a new world: the encoder's latents stay as they are, the decoder learns to draw the
    # new shapes from them.
    tune_decoder: bool = False
    # bookkeeping
    sample_every: int = 500
    checkpoint_every: int = 250
    resume: bool = False
    stop_after: int | None = None  # checkpoint and stop at this step (split a run across sessions)
    progress: bool = True
    times: dict = field(default_factory=dict)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _load_dataset(cfg: TrainConfig):
    if cfg.data:
        return FolderDataset(cfg.data, cfg.image_size)
    return SyntheticDataset(cfg.num_images, cfg.seed)


def _lr_lambda(cfg: TrainConfig):
    def f(step: int) -> float:
        if step < cfg.warmup:
            return (step + 1) / cfg.warmup
        progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return f


# ---------------------------------------------------------------- stage 1: the autoencoder


def train_vae(cfg: TrainConfig, pixels: torch.Tensor, device: torch.device):
    """pixels: N x 3 x H x W in [-1, 1] (CPU). Returns the trained VAE and its loss history."""
    torch.manual_seed(cfg.seed)
    vae = make_vae(cfg.image_size, tuple(cfg.vae_channels))
    vae.to(device)  # type: ignore[arg-type]  # typeshed's functools.wraps result binds no self
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / cfg.vae_steps)))
    )
    losses = []
    bar = tqdm(range(cfg.vae_steps), desc="stage 1: vae", disable=not cfg.progress, dynamic_ncols=True)
    n, _, h, w = pixels.shape
    crop = min(cfg.vae_crop or h, h)
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        idx = torch.randint(n, (cfg.vae_batch,), generator=g)
        oy = int(torch.randint(h - crop + 1, (1,), generator=g))
        ox = int(torch.randint(w - crop + 1, (1,), generator=g))
        x = pixels[idx, :, oy : oy + crop, ox : ox + crop].to(device)
        post = vae.encode(x).latent_dist
        z = post.mean + post.std * torch.randn(post.mean.shape, generator=g).to(device)
        rec = vae.decode(z).sample
        rec_loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        kl = post.kl().mean() / post.mean[0].numel()
        loss = rec_loss + cfg.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(rec_loss.item())
        if step % 10 == 0:
            bar.set_postfix(rec=f"{np.mean(losses[-50:]):.4f}", kl=f"{kl.item():.1f}")
    vae.eval()
    return vae, losses


def tune_decoder(
    cfg: TrainConfig, vae, pixels: torch.Tensor, means: torch.Tensor, stds: torch.Tensor, device: torch.device
) -> list[float]:
    """Stage 1b: train the decoder (and its post-quant conv) alone on whole images, decoding
    posterior samples of the frozen encoder (`means`/`stds`: stage 1's latent cache of `pixels`).
    Returns the mean loss of the first and last 20 steps."""
    if not cfg.decoder_steps:
        return []
    pixels, means, stds = pixels[: cfg.decoder_images], means[: cfg.decoder_images], stds[: cfg.decoder_images]
    vae.requires_grad_(False)
    params = [*vae.decoder.parameters(), *vae.post_quant_conv.parameters()]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.decoder_lr, weight_decay=0.0)
    steps = cfg.decoder_steps
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * s / steps)))
    )
    vae.decoder.train()
    losses = []
    bar = tqdm(range(steps), desc="stage 1b: decoder", disable=not cfg.progress, dynamic_ncols=True)
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 7_000_003 + step)
        idx = torch.randint(len(pixels), (cfg.decoder_batch,), generator=g)
        z = means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)
        x = pixels[idx].to(device)
        rec = vae.decode(z.to(device)).sample
        loss = F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(rec=f"{np.mean(losses[-50:]):.4f}")
    vae.requires_grad_(False)
    vae.eval()
    return [float(np.mean(losses[:20])), float(np.mean(losses[-20:]))]


def _stage_1b(cfg: TrainConfig, vae, dataset, pixels, means, stds, device: torch.device) -> dict:
    """Stage 1b and its report: the reconstructions judged before, and the decoder's loss."""
    return {
        "vae_before_decoder_tuning": vae_colour_check(vae, dataset, device),
        "decoder_loss_first_last": tune_decoder(cfg, vae, pixels, means, stds, device),
    }


def _pixels(dataset, count: int) -> torch.Tensor:
    """The first `count` images of `dataset`: count x 3 x H x W in [-1, 1] (CPU)."""
    return torch.from_numpy(np.stack([to_tensor_array(dataset.image(i)) for i in range(count)]))


@torch.no_grad()
def encode_all(vae, pixels: torch.Tensor, device: torch.device, batch: int = 256):
    means, stds = [], []
    for i in range(0, len(pixels), batch):
        post = vae.encode(pixels[i : i + batch].to(device)).latent_dist
        means.append(post.mean.cpu())
        stds.append(post.std.cpu())
    return torch.cat(means), torch.cat(stds)


@torch.no_grad()
def vae_colour_check(vae, dataset, device: torch.device, count: int = 256) -> dict[str, float]:
    """Reconstruct ground-truth scenes and judge them like generated images: does the VAE keep colours?"""
    if not hasattr(dataset, "scenes"):
        return {}
    from .evaluate import Case

    count = min(count, len(dataset))
    pixels = _pixels(dataset, count)
    rec = vae.decode(vae.encode(pixels.to(device)).latent_dist.mean).sample.clamp(-1, 1).cpu()
    images = [_to_pil(r) for r in rec]
    cases = [Case("", 0, dataset.scenes[i]) for i in range(count)]
    return score(cases, images)


def _to_pil(x: torch.Tensor):
    from PIL import Image

    arr = ((x.permute(1, 2, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
    return Image.fromarray(arr)


# ---------------------------------------------------------------- stage 2: UNet + text encoder


def build_pipeline(vae, text_encoder, tokenizer, unet):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=make_sample_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def _ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    ema_params: list[torch.Tensor] = list(ema.parameters())
    params = [p.detach() for p in model.parameters()]
    torch._foreach_lerp_(ema_params, params, 1.0 - decay)


def timestep_draws(kind: str, min_snr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """How often each timestep is drawn and what its loss is weighed by. "uniform": every timestep
    alike, weighed by min-SNR. "importance": half the draws uniform, half in proportion to min-SNR
    (which puts almost no weight on most of a uniform draw), each weighed so that the objective is
    the uniform one's in expectation."""
    n = len(min_snr)
    if kind == "uniform":
        return torch.full_like(min_snr, 1 / n), min_snr
    if kind == "importance":
        probs = 0.5 / n + 0.5 * min_snr / min_snr.sum()
        return probs, min_snr / (n * probs)
    raise ValueError(f"timesteps must be uniform or importance, got {kind!r}")


def train(cfg: TrainConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = _device(cfg.device)
    run = Path(cfg.run_dir)
    (run / "samples").mkdir(parents=True, exist_ok=True)
    (run / "config.json").write_text(json.dumps(asdict(cfg), indent=2))
    t_start = time.perf_counter()
    report: dict = {"config": asdict(cfg)}

    dataset = _load_dataset(cfg)
    tokenizer = build_tokenizer(dataset.words())

    # 1. stage 1: the autoencoder and the latent cache (skipped when resuming past it)
    vae_dir, cache = run / "vae", run / "latents.pt"
    if cfg.resume and (vae_dir / "config.json").exists() and cache.exists():
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(vae_dir).to(device).eval()
        means, stds = torch.load(cache)
        log.info("resumed stage 1 from %s", vae_dir)
    elif cfg.vae:
        from diffusers import AutoencoderKL

        vae = AutoencoderKL.from_pretrained(cfg.vae).to(device).eval()
        pixels = _pixels(dataset, len(dataset))
        means, stds = encode_all(vae, pixels, device)
        torch.save((means, stds), cache)
        if cfg.tune_decoder:
            t0 = time.perf_counter()
            report |= _stage_1b(cfg, vae, dataset, pixels, means, stds, device)
            report["stage1_seconds"] = time.perf_counter() - t0
        del pixels
        vae.save_pretrained(vae_dir)
        log.info("stage 1 skipped: latents encoded by %s%s", cfg.vae, ", its decoder tuned" if cfg.tune_decoder else "")
    else:
        t0 = time.perf_counter()
        pixels = _pixels(dataset, len(dataset))
        vae, vae_losses = train_vae(cfg, pixels, device)
        report["vae_loss_first_last"] = [float(np.mean(vae_losses[:20])), float(np.mean(vae_losses[-20:]))]
        means, stds = encode_all(vae, pixels, device)
        # 1/std of what stage 2 actually sees: posterior samples, not just their means.
        sampled = means + stds * torch.randn(means.shape, generator=torch.Generator().manual_seed(cfg.seed))
        scaling = float(1.0 / sampled.std())
        vae.register_to_config(scaling_factor=scaling)
        torch.save((means, stds), cache)
        report |= _stage_1b(cfg, vae, dataset, pixels, means, stds, device)
        vae.save_pretrained(vae_dir)
        del pixels
        report["stage1_seconds"] = time.perf_counter() - t0
    report["vae_scaling_factor"] = float(vae.config.scaling_factor)
    report["vae_colour_check"] = vae_colour_check(vae, dataset, device)
    log.info("vae reconstructions judged: %s", report["vae_colour_check"])
    vae.requires_grad_(False)
    scaling = vae.config.scaling_factor

    # 2. stage 2 models, optimiser, EMA
    torch.manual_seed(cfg.seed + 1)
    text_encoder = make_text_encoder(tokenizer, cfg.text_hidden, cfg.text_layers)
    text_encoder.to(device)  # type: ignore[arg-type]  # typeshed's functools.wraps result binds no self
    unet = make_unet(cfg.text_hidden, cfg.image_size // 8, tuple(cfg.unet_channels))
    unet.to(device)  # type: ignore[arg-type]  # typeshed's functools.wraps result binds no self
    ema_unet, ema_text = copy.deepcopy(unet).eval(), copy.deepcopy(text_encoder).eval()
    opt = torch.optim.AdamW(
        [{"params": unet.parameters(), "lr": cfg.lr}, {"params": text_encoder.parameters(), "lr": cfg.text_lr}],
        weight_decay=0.01,
    )
    lr_sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg))
    noise_sched = make_train_scheduler()
    alphas = noise_sched.alphas_cumprod.to(device)
    snr = alphas / (1 - alphas)
    # min-SNR weighting (for v-prediction: min(snr, gamma) / (snr + 1)) so the many easy
    # low-noise steps don't crowd out the high-noise ones that decide colour and layout.
    t_probs, t_weight = timestep_draws(cfg.timesteps, torch.clamp(snr, max=cfg.min_snr_gamma) / (snr + 1))
    start, losses = 0, []
    ckpt = run / "checkpoint.pt"
    if cfg.resume and ckpt.exists():
        state = torch.load(ckpt, weights_only=False)
        unet.load_state_dict(state["unet"])
        text_encoder.load_state_dict(state["text_encoder"])
        ema_unet.load_state_dict(state["ema_unet"])
        ema_text.load_state_dict(state["ema_text"])
        opt.load_state_dict(state["opt"])
        lr_sched.load_state_dict(state["lr_sched"])
        start, losses = state["step"], state["losses"]
        log.info("resumed stage 2 at step %d", start)

    token_cache: dict[str, torch.Tensor] = {}

    def tokenize(texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in token_cache]
        if missing:
            ids = tokenizer(
                missing,
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids
            token_cache.update(zip(missing, ids, strict=True))
        return torch.stack([token_cache[t] for t in texts])

    sample_cases = eval_cases(1)[:16]
    t0 = time.perf_counter()
    unet.train()
    text_encoder.train()
    bar = tqdm(
        range(start, cfg.steps),
        desc="stage 2: unet",
        initial=start,
        total=cfg.steps,
        disable=not cfg.progress,
        dynamic_ncols=True,
    )
    for step in bar:
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + 500_009 + step)
        rng = random.Random(f"{cfg.seed}-{step}")
        idx = torch.randint(len(means), (cfg.batch,), generator=g)
        texts = ["" if rng.random() < cfg.caption_dropout else rng.choice(dataset.captions[i]) for i in idx.tolist()]
        ids = tokenize(texts).to(device)
        latents = (means[idx] + stds[idx] * torch.randn(means[idx].shape, generator=g)).to(device) * scaling
        noise = torch.randn(latents.shape, generator=g).to(device)
        if cfg.timesteps == "uniform":  # (as the 25 Nov weights were drawn: the same random stream)
            t = torch.randint(0, len(t_probs), (cfg.batch,), generator=g).to(device)
        else:
            t = torch.multinomial(t_probs.cpu(), cfg.batch, replacement=True, generator=g).to(device)
        t = cast(torch.IntTensor, t)  # diffusers annotates timesteps IntTensor, a class no tensor op returns
        noisy = noise_sched.add_noise(latents, noise, t)
        target = noise_sched.get_velocity(latents, noise, t)

        hidden = text_encoder(ids)[0]
        pred = unet(noisy, t, hidden).sample
        per_sample = F.mse_loss(pred, target, reduction="none").mean(dim=(1, 2, 3))
        loss = (per_sample * t_weight[t]).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*unet.parameters(), *text_encoder.parameters()], 1.0)
        opt.step()
        lr_sched.step()
        decay = min(cfg.ema_decay, (1 + step) / (10 + step))
        _ema_update(ema_unet, unet, decay)
        _ema_update(ema_text, text_encoder, decay)
        losses.append(per_sample.mean().item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-100:]):.4f}")
        done = step + 1
        stopping = cfg.stop_after is not None and done >= cfg.stop_after
        if done % cfg.checkpoint_every == 0 or done == cfg.steps or stopping:
            state = {
                "unet": unet.state_dict(),
                "text_encoder": text_encoder.state_dict(),
                "ema_unet": ema_unet.state_dict(),
                "ema_text": ema_text.state_dict(),
                "opt": opt.state_dict(),
                "lr_sched": lr_sched.state_dict(),
                "step": done,
                "losses": losses,
            }
            torch.save(state, ckpt.with_suffix(".tmp"))
            ckpt.with_suffix(".tmp").replace(ckpt)
        if cfg.sample_every and (done % cfg.sample_every == 0 or done == cfg.steps):
            pipe = build_pipeline(vae, ema_text, tokenizer, ema_unet)
            from .evaluate import generate

            images = generate(pipe, sample_cases, DEFAULT_STEPS, DEFAULT_GUIDANCE, cfg.image_size)
            save_grid(images, str(run / "samples" / f"step_{done:06d}.png"), columns=4)
            log.info("step %d: loss %.4f, sample judged %s", done, np.mean(losses[-100:]), score(sample_cases, images))
        if stopping:
            log.info("stopped at step %d of %d; continue with --resume", done, cfg.steps)
            break
    report["stage2_seconds"] = time.perf_counter() - t0
    window = max(1, min(50, len(losses) // 5))
    report["loss_first_last"] = [float(np.mean(losses[:window])), float(np.mean(losses[-window:]))] if losses else None

    # 3. save the pipeline folder (EMA weights, the sampler the engine should use)
    pipe = build_pipeline(vae, ema_text, tokenizer, ema_unet)
    pipe.save_pretrained(cfg.output, safe_serialization=True)
    report["total_seconds"] = time.perf_counter() - t_start
    (run / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return report
