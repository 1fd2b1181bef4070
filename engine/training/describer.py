"""`dreamgrid train-describer` and `dreamgrid eval-describer`: the model behind /describe.

A small `VisionEncoderDecoderModel` (a Swin image encoder, a GPT-2 text decoder that cross-attends
to it) trained from scratch on the same synthetic captioned scenes as dreamgrid-tiny, with the same
whole-word tokenizer. Saved with its processor, it is a standard transformers folder:
`engine.describe.Describer` loads it exactly as it loads an operator's BLIP or GIT checkpoint.

Every image has several captions in different phrasings and one is drawn per step, so the model
learns a distribution over phrasings: beam search and sampling give four different prompts for one
image. Training images are lightly degraded (blur, noise, colour shifts) so the describer also reads
what a diffusion model draws, which is softer than the synthetic originals.

Every random draw comes from a generator seeded with (seed, step): a fixed seed gives the same run.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from transformers.modeling_outputs import BaseModelOutput

from ..describe import Describer
from ..params import SHIPPED_GUIDANCE
from ..tokenizer import build_tokenizer
from .dataset import (
    COLOURS,
    SHAPES,
    Scene,
    SyntheticDataset,
    all_combos,
    random_scene,
    render,
    trained_sample_combos,
    vocabulary,
)
from .evaluate import eval_cases

log = logging.getLogger(__name__)


@dataclass
class DescriberConfig:
    output: str = "engine/weights/dreamgrid-describer"
    num_images: int = 8000
    image_size: int = 64
    patch_size: int = 4
    seed: int = 0
    threads: int | None = None
    steps: int = 1500
    batch: int = 48
    lr: float = 1e-3
    warmup: int = 100
    hidden: int = 128
    vision_layers: int = 3
    text_layers: int = 2
    augment: float = 0.5  # the share of training images that are degraded
    shape_loss: float = 1.0  # weight of the training-only shape classifier's loss
    check_every: int = 250  # steps between quick checks on held-out images (0: none)
    checks: dict = field(default_factory=dict)
    progress: bool = True
    times: dict = field(default_factory=dict)


def make_describer(tokenizer, cfg: DescriberConfig):
    """A VisionEncoderDecoder (Swin encoder, GPT-2 decoder) and its processor: about 0.9 M parameters, 4 MB.

    Swin's small windows see local edges first, as a convolution does; a plain ViT of this size
    learnt the colours but not the shapes in the same number of steps (MODEL_CARD.md).
    """
    from transformers import (
        CLIPImageProcessorPil,
        GPT2Config,
        SwinConfig,
        VisionEncoderDecoderConfig,
        VisionEncoderDecoderModel,
        VisionTextDualEncoderProcessor,
    )

    encoder = SwinConfig(
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        embed_dim=cfg.hidden // 4,
        depths=[1] * cfg.vision_layers,
        num_heads=[2, 4, 8][: cfg.vision_layers],
        window_size=4,
        mlp_ratio=2.0,
    )
    decoder = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=40,
        n_embd=cfg.hidden,
        n_layer=cfg.text_layers,
        n_head=4,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        add_cross_attention=True,
    )
    # It sets the decoder's is_decoder (transformers 5's GPT2Config no longer declares that field).
    config = VisionEncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    config.decoder_start_token_id = tokenizer.bos_token_id
    config.eos_token_id = tokenizer.eos_token_id
    config.pad_token_id = tokenizer.pad_token_id
    model = VisionEncoderDecoderModel(config=config)
    model.generation_config.decoder_start_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    # Members' images of any size: the short side is scaled to the model's input, then centre-cropped.
    image_processor = CLIPImageProcessorPil(
        size={"shortest_edge": cfg.image_size},
        crop_size={"height": cfg.image_size, "width": cfg.image_size},
        image_mean=[0.5, 0.5, 0.5],
        image_std=[0.5, 0.5, 0.5],
    )
    # The generic image-processor + tokenizer pair, so AutoProcessor loads it like BLIP's or GIT's.
    return model, VisionTextDualEncoderProcessor(image_processor=image_processor, tokenizer=tokenizer)


def training_data(count: int, seed: int) -> SyntheticDataset:
    """Scenes of every (shape, colour, background) triple, less the scenes the describer is judged on.

    Every triple, because /describe must name whatever imagine draws, including the triples held out
    from dreamgrid-tiny's training; the held-out part here is the images (`eval_scenes`).
    """
    data = SyntheticDataset(count, seed=seed, combos=all_combos())
    held_out = set(eval_scenes())
    keep = [i for i, scene in enumerate(data.scenes) if scene not in held_out]
    data.scenes = [data.scenes[i] for i in keep]
    data.captions = [data.captions[i] for i in keep]
    return data


def _degrade(x: torch.Tensor, share: float, g: torch.Generator) -> torch.Tensor:
    """Blur, noise and shift the colours of a random `share` of a batch in [-1, 1]."""
    n = x.shape[0]
    pick = (torch.rand(n, generator=g) < share).view(n, 1, 1, 1)
    soft = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = torch.rand(n, 1, 1, 1, generator=g)
    y = x + amount * (soft - x)
    y = y * (1 + 0.15 * (torch.rand(n, 1, 1, 1, generator=g) - 0.5))  # contrast
    y = y + 0.12 * (torch.rand(n, 3, 1, 1, generator=g) - 0.5)  # colour cast
    y = y + 0.06 * torch.randn(y.shape, generator=g)  # grain
    return torch.where(pick, y.clamp(-1, 1), x)


@torch.no_grad()
def _quick_check(model, tokenizer, cfg: DescriberConfig, count: int = 64) -> dict[str, float]:
    """Greedy captions of the first held-out images: how training is going, in the log and the report."""
    model.eval()
    scenes = eval_scenes(count)
    pixels = torch.stack([torch.from_numpy(np.array(render(s))).permute(2, 0, 1) for s in scenes])
    pixels = pixels.float() / 127.5 - 1
    if cfg.image_size != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=cfg.image_size, mode="bicubic", antialias=True).clamp(-1, 1)
    out = model.generate(pixel_values=pixels, max_new_tokens=24, num_beams=1, do_sample=False)
    texts = tokenizer.batch_decode(out, skip_special_tokens=True)
    model.train()
    hits = _hits([(read_prompt(t), Reading(s.shape, s.fg, s.bg)) for t, s in zip(texts, scenes, strict=True)])
    return {k: round(v, 3) for k, v in hits.items()}


def _lr(cfg: DescriberConfig, step: int) -> float:
    if step < cfg.warmup:
        return (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * progress))


def train_describer(cfg: DescriberConfig) -> dict:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    data = training_data(cfg.num_images, cfg.seed)
    pixels = torch.from_numpy(np.stack([np.asarray(data.image(i)) for i in range(len(data))]))
    pixels = pixels.permute(0, 3, 1, 2).float() / 127.5 - 1  # NCHW in [-1, 1], what the processor makes
    if cfg.image_size != pixels.shape[-1]:
        pixels = F.interpolate(pixels, size=cfg.image_size, mode="bicubic", antialias=True).clamp(-1, 1)
    cfg.times["data_s"] = round(time.perf_counter() - started, 1)

    tokenizer = build_tokenizer(vocabulary())
    torch.manual_seed(cfg.seed)
    model, processor = make_describer(tokenizer, cfg)
    model.train()
    # Training only, never saved: a shape classifier on the encoder's pooled output. Without it the
    # encoder learnt the colours (what most caption tokens depend on) and left the shape at chance.
    shape_head = torch.nn.Linear(model.config.encoder.hidden_size, len(SHAPES))
    shapes = torch.tensor([SHAPES.index(scene.shape) for scene in data.scenes])
    optimizer = torch.optim.AdamW([*model.parameters(), *shape_head.parameters()], lr=cfg.lr, weight_decay=0.01)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr(cfg, s))
    log.info("describer: %.2f M parameters, %d images", sum(p.numel() for p in model.parameters()) / 1e6, len(data))

    losses: list[float] = []
    t0 = time.perf_counter()
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="describer", unit="step")
    for step in range(cfg.steps):
        g = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        index = torch.randint(len(data), (cfg.batch,), generator=g)
        choice = torch.randint(1 << 30, (cfg.batch,), generator=g)
        captions = [
            data.captions[i][c % len(data.captions[i])] for i, c in zip(index.tolist(), choice.tolist(), strict=True)
        ]
        text = tokenizer(captions, padding=True, return_tensors="pt")
        # The decoder starts from <|startoftext|> on its own (decoder_start_token_id): predict the rest.
        labels = text.input_ids[:, 1:].masked_fill(text.attention_mask[:, 1:] == 0, -100)
        images = _degrade(pixels[index], cfg.augment, g)
        encoded = model.encoder(pixel_values=images).last_hidden_state
        caption_loss = model(encoder_outputs=BaseModelOutput(last_hidden_state=encoded), labels=labels).loss
        shape_loss = F.cross_entropy(shape_head(encoded.mean(dim=1)), shapes[index])
        loss = caption_loss + cfg.shape_loss * shape_loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.3f}")
        if cfg.check_every and (step + 1) % cfg.check_every == 0:
            cfg.checks[step + 1] = _quick_check(model, tokenizer, cfg)
            log.info("step %d: loss %.3f, held-out greedy %s", step + 1, np.mean(losses[-50:]), cfg.checks[step + 1])
    if bar is not None:
        bar.close()
    cfg.times["train_s"] = round(time.perf_counter() - t0, 1)

    model.eval()
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    cfg.times["total_s"] = round(time.perf_counter() - started, 1)
    report = {
        "final_loss": round(float(np.mean(losses[-100:])), 4),
        "parameters": sum(p.numel() for p in model.parameters()),
        "config": asdict(cfg),
    }
    (out / "training_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def eval_scenes(count: int = 192) -> list[Scene]:
    """Synthetic scenes of every triple, the same on every machine, never drawn for training."""
    rng = random.Random("dreamgrid-describer-eval")
    return [random_scene(rng, all_combos()) for _ in range(count)]


def _round_trip(describer, pipe, cases, part: str, steps: int, guidance: float, size: int) -> dict[str, object]:
    """describe(imagine(prompt)), judged against the prompt and against what the pixel judge sees."""
    from .evaluate import classify, generate, names_background

    started = time.perf_counter()
    drawn = generate(pipe, cases, steps, guidance, size)
    pairs, judged = [], []
    for case, image in zip(cases, drawn, strict=True):
        got = read_prompt(describer.describe(image)[0])
        asked_bg = case.scene.bg if names_background(case) else None  # (any background is right then)
        pairs.append((got, Reading(case.scene.shape, case.scene.fg, asked_bg)))
        seen = classify(image)
        judged.append((got, Reading(seen.shape, seen.fg, seen.bg)))
    return {
        part: _hits(pairs),
        f"{part}_vs_pixels": _hits(judged),
        f"{part}_cases": len(cases),
        f"{part}_s": round(time.perf_counter() - started, 1),
    }


# -- judging what a prompt says ---------------------------------------------------------------


@dataclass(frozen=True)
class Reading:
    shape: str | None
    fg: str | None
    bg: str | None


def read_prompt(text: str) -> Reading:
    """Which shape and colours a synthetic-world prompt names.

    In every phrasing the shape's colour comes right before the shape word; the other colour
    word is the background's.
    """
    words = text.lower().replace(",", " ").split()
    shape = fg = bg = None
    for i, word in enumerate(words):
        if word in SHAPES and shape is None:
            shape = word
            if i > 0 and words[i - 1] in COLOURS:
                fg = words[i - 1]
    colours = [w for w in words if w in COLOURS]
    others = [c for c in colours if c != fg] if fg is not None else colours
    if others:
        bg = others[0]
    elif fg is not None and colours.count(fg) > 1:
        bg = fg
    return Reading(shape, fg, bg)


def _hits(cases: list[tuple[Reading, Reading]]) -> dict[str, float]:
    """Shares of (read, wanted) pairs that agree; a wanted background of None (the prompt named
    none) is out of the background's count and agrees with any."""
    n = max(1, len(cases))
    asked_bg = [(got, want) for got, want in cases if want.bg is not None]
    return {
        "shape": sum(got.shape == want.shape for got, want in cases) / n,
        "foreground": sum(got.fg == want.fg for got, want in cases) / n,
        "background": sum(got.bg == want.bg for got, want in asked_bg) / max(1, len(asked_bg)),
        "all three": sum(
            got.shape == want.shape and got.fg == want.fg and want.bg in (None, got.bg) for got, want in cases
        )
        / n,
    }


DESCRIBER_TARGETS = {
    "held_out": {"shape": 0.9, "foreground": 0.9, "background": 0.9},
    "round_trip": {"shape": 0.8, "foreground": 0.8, "background": 0.8},
}


def evaluate_describer(
    folder: str,
    *,
    images: int = 192,
    round_trip_seeds: int = 4,
    text_to_image: str | None = "engine/weights/dreamgrid-tiny",
    steps: int = 20,
    guidance: float = SHIPPED_GUIDANCE,
    size: int = 64,
) -> dict[str, Any]:  # a JSON report, read by key
    """Does the first of the four prompts name the shape and both colours?

    held_out: synthetic images never drawn for training. round_trip: the 96 held-out prompts of
    `dreamgrid eval` (triples dreamgrid-tiny never saw), drawn by the text-to-image model, then
    described; round_trip_trained: the prompts of `dreamgrid eval --cases trained` (triples it did
    see, four of each shape). Each is judged against the prompt, and (`*_vs_pixels`) against what
    the pixel judge sees in the same image.
    """
    describer = Describer.load(folder, device=torch.device("cpu"))
    result: dict[str, Any] = {}

    started = time.perf_counter()
    scenes = eval_scenes(images)
    pairs = []
    for scene in scenes:
        prompt = describer.describe(render(scene))[0]
        pairs.append((read_prompt(prompt), Reading(scene.shape, scene.fg, scene.bg)))
    result["held_out"] = _hits(pairs)
    result["held_out_cases"] = len(scenes)
    result["held_out_s"] = round(time.perf_counter() - started, 1)
    result["example"] = {"scene": asdict(scenes[0]), "prompts": describer.describe(render(scenes[0]))}

    if text_to_image:
        from .evaluate import load_pipeline

        pipe = load_pipeline(text_to_image)
        for part, combos in (("round_trip", None), ("round_trip_trained", trained_sample_combos())):
            result.update(
                _round_trip(describer, pipe, eval_cases(round_trip_seeds, combos), part, steps, guidance, size)
            )
    return result
