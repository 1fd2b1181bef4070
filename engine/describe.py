"""/describe: image -> candidate prompts, with a transformers image-to-text model.

Any local captioning checkpoint that `AutoProcessor` and `AutoModelForImageTextToText` load
(BLIP, GIT, a VisionEncoderDecoder with its processor) works through the same code path as the
describer dreamgrid ships (`engine/weights/dreamgrid-describer`, a small VisionEncoderDecoder
trained by `dreamgrid train-describer` on the same synthetic scenes as dreamgrid-tiny). Nothing downloads:
a folder, or a model id already in the local Hugging Face cache.

    describer = Describer.load("dreamgrid-describer", device=torch.device("cpu"))
    describer.describe(image)            # four prompts: beam search, best first
    describer.describe(image, seed=7)    # four more, sampled, phrased differently

The four prompts agree on where the subject is: the position the candidates' scores favour, or,
when they do not clearly favour one, none (`agree_on_position`). The shipped describer also says
when a picture lies far outside the scenes it was trained on (`Familiarity`: the distance of the
picture's encoder features from those of its own training scenes): `knows(image)` is False, and
the engine answers that instead of a confident wrong prompt.

Not thread-safe (generation holds state in the model); the engine calls it from one thread at a time.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from PIL import Image  # noqa: E402

SHIPPED_DESCRIBER = "dreamgrid-describer"
WEIGHTS_DIR = Path(__file__).parent / "weights"

PROMPTS_PER_DESCRIBE = 4
MAX_NEW_TOKENS = 32
# Beam search keeps this many beams per wanted prompt, so near-duplicates can be dropped and four remain.
BEAMS_PER_PROMPT = 3
# Sampling ("describe again") draws this many per wanted prompt for the same reason; a mild
# temperature changes the phrasing without making up colours.
SAMPLES_PER_PROMPT = 4
SAMPLING_TEMPERATURE = 0.8

# Where a prompt puts its subject, in the words captioners use. A position is named in the four
# prompts only when the candidates' scores give it at least POSITION_AGREEMENT of the weight of all
# candidates that name one (bench/describe_bench.py: the shipped describer seldom does).
POSITION_PHRASES: dict[str, tuple[str, ...]] = {
    "center": ("in the center", "in the centre", "in the middle", "centered", "centred"),
    "left": ("on the left", "at the left", "to the left"),
    "right": ("on the right", "at the right", "to the right"),
    "top": ("at the top", "near the top", "up top"),
    "bottom": ("at the bottom", "near the bottom", "down low"),
}
POSITION_AGREEMENT = 0.75
_POSITION = re.compile(
    r"\s*\b(" + "|".join(re.escape(p) for ps in POSITION_PHRASES.values() for p in ps) + r")\b", re.IGNORECASE
)
_POSITION_OF = {phrase: where for where, phrases in POSITION_PHRASES.items() for phrase in phrases}

# Familiarity (the shipped describer): its encoder's third-stage features (mean and spread over the
# patches) of a picture, as a Mahalanobis distance from those of FAMILIAR_SCENES of its own training
# scenes, half of them degraded as its training degrades them. Over FAMILIAR_LIMIT the picture is
# outside what it knows. Measured by bench/describe_bench.py (BENCHMARKS.md), for the six-shape
# describer and model: all but one of its 96 held-out scenes (12.4) and all of dreamgrid-tiny's
# pictures (up to 11.2) lie under 11.5; noise, photos and many-coloured pictures at 12.2 or more.
FAMILIAR_SCENES = 512
FAMILIAR_STAGE = 2
FAMILIAR_LIMIT = 11.5


class DescriberError(Exception):
    """The describer could not be loaded; the message says why in one line."""


def resolve(name: str) -> str:
    """`dreamgrid-describer` is the shipped folder; anything else is a folder or a cached hub id."""
    return str(WEIGHTS_DIR / SHIPPED_DESCRIBER) if name == SHIPPED_DESCRIBER else name


def clean(text: str) -> str:
    """One line of plain prompt text: no parameters (`--x`, `—x`), no stray punctuation at the ends."""
    text = re.sub(r"(?:--|[—–])+", " ", text)
    return " ".join(text.split()).strip(" ,.;:")


def position_of(text: str) -> str | None:
    """The position a prompt names ("left", "top"…), or None."""
    match = _POSITION.search(text)
    return _POSITION_OF[match[1].lower()] if match else None


def without_position(text: str) -> str:
    """`a red circle at the left on blue` -> `a red circle on blue`."""
    return " ".join(_POSITION.sub("", text).split()).strip(" ,.;:")


def agree_on_position(texts: list[str], weights: list[float]) -> list[str]:
    """The candidates, best first, made to agree on where the subject is.

    `weights` are the candidates' probabilities (or equal, for samples). The position with at least
    POSITION_AGREEMENT of the weight of the candidates naming one is kept, and candidates naming
    another are dropped; without such a position none is named: every candidate loses its position.
    """
    mass: dict[str, float] = {}
    for text, weight in zip(texts, weights, strict=True):
        where = position_of(text)
        if where is not None:
            mass[where] = mass.get(where, 0.0) + weight
    total = sum(mass.values())
    agreed = max(mass, key=mass.__getitem__) if mass else None
    if agreed is not None and mass[agreed] >= POSITION_AGREEMENT * total:
        return [text for text in texts if position_of(text) in (agreed, None)]
    return [without_position(text) for text in texts]


@dataclass
class Familiarity:
    """How far a picture lies from the describer's training pictures (see FAMILIAR_LIMIT)."""

    mean: torch.Tensor
    precision: torch.Tensor
    limit: float = FAMILIAR_LIMIT

    @staticmethod
    def features(model: Any, pixel_values: torch.Tensor) -> torch.Tensor:
        hidden = model.encoder(pixel_values=pixel_values, output_hidden_states=True).hidden_states[FAMILIAR_STAGE]
        return torch.cat([hidden.mean(1), hidden.std(1)], dim=1).double()

    @classmethod
    @torch.no_grad()
    def of_scenes(cls, model: Any, processor: Any, count: int = FAMILIAR_SCENES) -> Familiarity:
        """From `count` of the synthetic scenes the shipped describer was trained on (the same each time)."""
        import random

        from engine.training.dataset import all_combos, random_scene, render

        rng = random.Random("dreamgrid-describer-familiarity")
        scenes = [render(random_scene(rng, all_combos())).convert("RGB") for _ in range(count)]
        pixels = processor(images=scenes, return_tensors="pt")["pixel_values"]
        g = torch.Generator().manual_seed(0)
        half = pixels[count // 2 :]
        soft = torch.nn.functional.avg_pool2d(torch.nn.functional.pad(half, (1, 1, 1, 1), mode="replicate"), 3, 1)
        half = half + torch.rand(len(half), 1, 1, 1, generator=g) * (soft - half)  # blur, as training does
        pixels = torch.cat([pixels[: count // 2], half + 0.06 * torch.randn(half.shape, generator=g)])
        features = torch.cat(
            [cls.features(model, chunk.to(model.device, model.dtype)) for chunk in pixels.split(128)]
        ).cpu()
        mean = features.mean(0)
        covariance = torch.cov(features.T)
        dims = covariance.shape[0]
        shrunk = 0.8 * covariance + 0.2 * torch.eye(dims, dtype=covariance.dtype) * covariance.trace() / dims
        return cls(mean, torch.linalg.inv(shrunk))

    @torch.no_grad()
    def distance(self, model: Any, pixel_values: torch.Tensor) -> float:
        offset = self.features(model, pixel_values)[0].cpu() - self.mean
        return float(torch.sqrt(offset @ self.precision @ offset))


@dataclass
class Describer:
    name: str
    processor: Any
    model: Any
    device: torch.device
    familiarity: Familiarity | None = None  # the shipped describer's; None: this describer has no measure

    @classmethod
    def load(cls, name: str, *, device: torch.device, dtype: torch.dtype = torch.float32) -> Describer:
        from transformers import AutoModelForImageTextToText, AutoProcessor
        from transformers.utils import logging as transformers_logging

        source = resolve(name)
        transformers_logging.disable_progress_bar()
        try:
            processor = AutoProcessor.from_pretrained(source, local_files_only=True)
            model = AutoModelForImageTextToText.from_pretrained(source, dtype=dtype, local_files_only=True)
        except Exception as e:
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            if not Path(source).exists():
                reason = "no such folder, and no such model in the local Hugging Face cache (dreamgrid never downloads)"
            raise DescriberError(f"could not load describer {name!r}: {reason}") from e
        model.to(device).eval()  # type: ignore[arg-type]  # typeshed's functools.wraps result binds no self
        familiarity = Familiarity.of_scenes(model, processor) if name == SHIPPED_DESCRIBER else None
        return cls(name, processor, model, device, familiarity)

    @torch.no_grad()
    def describe(
        self,
        image: Image.Image,
        *,
        count: int = PROMPTS_PER_DESCRIBE,
        seed: int | None = None,
        avoid: Iterable[str] = (),
    ) -> list[str]:
        """Up to `count` distinct prompts for `image`, most likely first, agreeing on position.

        seed None: beam search, so the same image always gets the same prompts. With a seed: sampled
        phrasings (reproducible for that seed), skipping the prompts in `avoid` where it can. Ask
        `knows(image)` first: for a picture it does not know, these are guesses.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        texts, weights = self.candidates(self._pixels(image), count, seed)
        return pick_distinct(agree_on_position(texts, weights), count, avoid)

    def distance(self, image: Image.Image) -> float | None:
        """How far `image` lies from the describer's training pictures (`Familiarity`), or None
        where this describer has no measure."""
        if self.familiarity is None:
            return None
        return self.familiarity.distance(self.model, self._pixels(image))

    def knows(self, image: Image.Image) -> bool:
        """False for a picture far outside what the describer knows (its prompts would be guesses)."""
        distance = self.distance(image)
        return distance is None or self.familiarity is None or distance <= self.familiarity.limit

    def _pixels(self, image: Image.Image) -> torch.Tensor:
        inputs = self.processor(images=[image.convert("RGB")], return_tensors="pt")
        return inputs["pixel_values"].to(self.device, self.model.dtype)

    def candidates(self, pixel_values: torch.Tensor, count: int, seed: int | None) -> tuple[list[str], list[float]]:
        """Every candidate prompt, best first, with its probability (beam search) or equal weights (samples)."""
        if seed is None:
            width = BEAMS_PER_PROMPT * count
            kwargs: dict[str, Any] = dict(num_beams=width, num_return_sequences=width, do_sample=False)
        else:
            width = SAMPLES_PER_PROMPT * count
            kwargs = dict(do_sample=True, temperature=SAMPLING_TEMPERATURE, num_return_sequences=width, num_beams=1)
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # sampling must not move anyone else's RNG
            if seed is not None:
                torch.manual_seed(seed)
            out = self.model.generate(
                pixel_values=pixel_values,
                max_new_tokens=MAX_NEW_TOKENS,
                output_scores=True,
                return_dict_in_generate=True,
                **kwargs,
            )
        texts = [clean(t) for t in self.processor.batch_decode(out.sequences, skip_special_tokens=True)]
        scores = getattr(out, "sequences_scores", None)  # beam search: each candidate's mean log-probability
        weights = scores.exp().tolist() if scores is not None else [1.0] * len(texts)
        return texts, weights


def pick_distinct(texts: Iterable[str], count: int, avoid: Iterable[str] = ()) -> list[str]:
    """The first `count` texts that differ (ignoring case and spacing); those in `avoid` only if short of new ones."""

    def same(text: str) -> str:
        return " ".join(text.lower().split())

    avoided = {same(t) for t in avoid}
    fresh: list[str] = []
    repeats: list[str] = []
    seen: set[str] = set()
    for text in texts:
        key = same(text)
        if not key or key in seen:
            continue
        seen.add(key)
        (repeats if key in avoided else fresh).append(text)
    return (fresh + repeats)[:count]
