"""/describe: image -> candidate prompts, with a transformers image-to-text model.

Any local captioning checkpoint that `AutoProcessor` and `AutoModelForImageTextToText` load
(BLIP, GIT, a VisionEncoderDecoder with its processor) works through the same code path as the
describer dreamgrid ships (`engine/weights/dreamgrid-describer`, a small VisionEncoderDecoder
trained by `dreamgrid train-describer` on the same synthetic scenes as dreamgrid-tiny). Nothing downloads:
a folder, or a model id already in the local Hugging Face cache.

    describer = Describer.load("dreamgrid-describer", device=torch.device("cpu"))
    describer.describe(image)            # four prompts: beam search, best first
    describer.describe(image, seed=7)    # four more, sampled, phrased differently

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


class DescriberError(Exception):
    """The describer could not be loaded; the message says why in one line."""


def resolve(name: str) -> str:
    """`dreamgrid-describer` is the shipped folder; anything else is a folder or a cached hub id."""
    return str(WEIGHTS_DIR / SHIPPED_DESCRIBER) if name == SHIPPED_DESCRIBER else name


def clean(text: str) -> str:
    """One line of plain prompt text: no parameters (`--x`, `—x`), no stray punctuation at the ends."""
    text = re.sub(r"(?:--|[—–])+", " ", text)
    return " ".join(text.split()).strip(" ,.;:")


@dataclass
class Describer:
    name: str
    processor: Any
    model: Any
    device: torch.device

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
        return cls(name, processor, model, device)

    @torch.no_grad()
    def describe(
        self,
        image: Image.Image,
        *,
        count: int = PROMPTS_PER_DESCRIBE,
        seed: int | None = None,
        avoid: Iterable[str] = (),
    ) -> list[str]:
        """Up to `count` distinct prompts for `image`, most likely first.

        seed None: beam search, so the same image always gets the same prompts. With a seed: sampled
        phrasings (reproducible for that seed), skipping the prompts in `avoid` where it can.
        """
        if count < 1:
            raise ValueError(f"count must be at least 1, got {count}")
        inputs = self.processor(images=[image.convert("RGB")], return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.device, self.model.dtype)
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
            out = self.model.generate(pixel_values=pixel_values, max_new_tokens=MAX_NEW_TOKENS, **kwargs)
        texts = [clean(t) for t in self.processor.batch_decode(out, skip_special_tokens=True)]
        return pick_distinct(texts, count, avoid)


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
