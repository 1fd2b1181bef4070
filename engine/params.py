"""Midjourney parameters -> diffusers arguments. Pure Python, no torch: the bot imports it.

`PARAMETERS` is the one table of prompt parameters: name, aliases, values, default and how each
reaches diffusers. The bot's prompt parser takes names, ranges and examples from it, `/help` and
the engine CLI's help are written from it, and a test checks the README's table against it.

Image-to-image strengths: Vary Strong / Subtle use img2img `strength` 0.75 / 0.4; Upscale Subtle /
Creative is 2x Lanczos, then img2img `strength` 0.1 / 0.3, at least 4 steps ("hires fix"). An image prompt's `--iw W`
is IP-Adapter scale 0.5·W, or without an adapter img2img `strength` 1 − 0.25·W. Zoom Out, Pan and Make Square
run the inpainting pipeline (`from_pipe`) on a larger canvas at `OUTPAINT_NEW_AREA`; Vary (Region) runs it on the
chosen cells at `VARY_REGION` (1: redrawn from scratch).

Stylize: higher values mean "more artistic, less literal" in Midjourney, which is lower classifier-free
guidance. Chaos: a tile with chaos C gets a 2x2 random field, upsampled, added to its starting noise
(amplitude 1.5·C/100, then renormalised to unit variance), which moves composition and colour layout, and
Gaussian noise of C/100 · std on its prompt embedding. Both are seeded by the tile's seed, so chaos is
reproducible and batch-compatible. In img2img (variation, upscale) only the embedding noise applies.
"""

from __future__ import annotations

import enum
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from engine.requests import LoraWeight

SEED_MIN, SEED_MAX = 0, 4_294_967_295
CHAOS_MIN, CHAOS_MAX, CHAOS_DEFAULT = 0, 100, 0
STYLIZE_MIN, STYLIZE_MAX, STYLIZE_DEFAULT = 0, 1000, 100
STOP_MIN, STOP_MAX, STOP_DEFAULT = 10, 100, 100
QUALITY_VALUES = (0.25, 0.5, 1.0, 2.0)
QUALITY_DEFAULT = 1.0
# --draft: a quarter of the steps on tiles of half the side (a sixteenth of the work on a large model;
# the shipped 64 px model keeps its size, below which it draws nothing recognisable).
DRAFT_STEPS_DIVISOR = 4
DRAFT_MIN_SIDE = 64
# Enhance: a draft's tile redrawn at full steps and size, keeping its composition.
ENHANCE = 0.5
# --lora NAME[:W] and <lora:NAME:W>: LoRAs per job, and their weights (diffusers' set_adapters weights).
LORA_MAX = 4
LORA_WEIGHT_MIN, LORA_WEIGHT_MAX, LORA_WEIGHT_DEFAULT = 0.0, 2.0, 1.0
TUNE_MIN_PICTURES, TUNE_MAX_PICTURES = 5, 30  # /tune's moodboard
TUNE_STEPS = 300  # /tune's training steps: ~2 minutes for the shipped model on one CPU thread (BENCHMARKS.md)
LORA_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")
# --iw: how strongly an image prompt steers the result (Midjourney's range and default).
IMAGE_WEIGHT_MIN, IMAGE_WEIGHT_MAX, IMAGE_WEIGHT_DEFAULT = 0.0, 3.0, 1.0
# --sw: how strongly a style reference (--sref) steers (Midjourney's range and default); a style
# code (`--sref random` prints one) names a seeded palette, so the same code draws the same style.
STYLE_WEIGHT_MIN, STYLE_WEIGHT_MAX, STYLE_WEIGHT_DEFAULT = 0, 1000, 100
STYLE_CODE_MIN, STYLE_CODE_MAX = 1, 4_294_967_295
# The share of the gap between a render's latent statistics and the reference's that each denoising
# step closes: 1 − exp(−sw / STYLE_WEIGHT_SCALE), 0.39 at the default 100, 0.92 at 500, 0.99 at
# 1000. Measured by bench/sref_bench.py (BENCHMARKS.md).
STYLE_WEIGHT_SCALE = 200.0


ASPECT_MAX = 4  # an aspect ratio lies between 1:ASPECT_MAX and ASPECT_MAX:1
REPEAT_MIN, REPEAT_MAX = 1, 40
BASE_STEPS = 20  # steps at --q 1
# The guidance the shipped dreamgrid-tiny is drawn at (at --stylize 100), the bot's GUIDANCE_SCALE
# being for the models operators bring. Chosen on its model card's three case sets: at 4 it names
# the foreground colour on 99.0 % of held-out prompts (94.8 % at 7.5) and draws trained triples'
# shapes at 95.8 % (92.7 %), and a Vary keeps a member's picture's colours in 32 of 32 tiles (24).
SHIPPED_GUIDANCE = 4.0
MAX_STEPS = 150

# img2img strengths (0 keeps the source, 1 ignores it). Measured on the tiny model: mean abs pixel
# change from the source tile is clearly smaller at Subtle than at Strong (tests/engine/test_actions.py).
VARY_STRONG = 0.75
VARY_SUBTLE = 0.4
# Measured by bench/upscale_bench.py on the shipped model (BENCHMARKS.md): Subtle has 3.6x Lanczos's
# high-frequency energy and drifts 8/255 from the source; Creative at 0.3 invents more (drift 13/255,
# 1.6x Subtle's), where 0.2 was hardly different from Subtle (10/255). Above ~0.35 the 64 px model
# redraws the subject smaller. At least UPSCALE_MIN_STEPS run, so a --q .25 job still denoises.
UPSCALE_SUBTLE = 0.1  # sharpens, keeps the picture, like Midjourney's Upscale (Subtle)
UPSCALE_CREATIVE = 0.3  # redraws detail and visibly drifts from the source
UPSCALE_MIN_STEPS = 4  # denoising steps an upscale runs at least, whatever --quality says
# /blend without an IP-Adapter re-noises the combined latents this far. Measured on the shipped model:
# from 0.45 up its own prior takes over and more tiles fall back to one image's colours; at 0.3 both
# images' colours show in 83 % of two-image tiles (bench/edit_bench.py).
BLEND_STRENGTH = 0.3
# Each tile sets the other images' middle in the lead image's surroundings: a soft disc of this radius
# (a share of the tile's shorter side) fading out over BLEND_EDGE (bench/edit_bench.py).
BLEND_MIDDLE, BLEND_EDGE = 0.3, 0.06
BLEND_MIN_IMAGES, BLEND_MAX_IMAGES = 2, 5
# /blend with an IP-Adapter: its scale, as an image prompt's at --iw 2 (the images lead, the prompt is optional).
BLEND_IP_ADAPTER_SCALE = 1.0
VARY_REGION = 1.0  # Vary (Region) redraws the chosen cells from scratch, as Midjourney's does
# Zoom Out, Make Square and Pan: how far the new area is re-noised from the kept picture's edge colours
# smeared outwards (engine/actions/outpaint.fill_new_area). Measured by bench/outpaint_bench.py on the
# shipped model (BENCHMARKS.md): from pure noise (1) the new area held a copy of the kept object in 69%
# of Zoom Outs and 28% of Pans (a plain /imagine draws a second object in 0% / 9%); at 0.45, 22% / 3%.
OUTPAINT_NEW_AREA = 0.45
# The shipped dreamgrid-tiny's own (the engine's hints): its flat backgrounds need no new detail. The
# model shipped on 4 Dec continued the kept object into the new area in 28 % of 2x Zoom Outs at 0.45
# and 9 % at 0.2 (a plain /imagine draws a second object in none), and left smudges on dark
# backgrounds at 0.1. The one-sitting model of 5 Dec: 3 % (2 of 64) at 0.2, 1 % (1 of 96) at 0.15,
# with no smudges; Zoom Out 1.5x and Pan clone in none. A real model's new area would stay a smear.
SHIPPED_NEW_AREA = 0.15

# Animate's --motion: how far (as an img2img strength) each frame may move from the picture. On the
# shipped motion model below ~0.5 the clip barely moves; at 1 the frames forget the picture but for the
# first (which is held to it). Operator video models that have a motion knob (Stable Video Diffusion's
# motion bucket) read it as that; the others take motion from the prompt.
MOTION_LOW = 0.6
MOTION_HIGH = 0.85
MOTIONS = {"low": MOTION_LOW, "high": MOTION_HIGH}
ANIMATE_MIN_STEPS = 4  # a clip denoised in fewer steps flickers from frame to frame

# Retexture: the picture redrawn with a new prompt, keeping where things are. Below Vary (Strong),
# so the composition survives; high enough that the new prompt's colours and style take over
# (on the shipped model the background follows the new prompt fully from 0.5 up).
RETEXTURE = 0.6


class ValueType(enum.Enum):
    """How a parameter's value is written, and so how it is read."""

    WHOLE = "whole"  # a whole number within `bounds`
    DECIMAL = "decimal"  # a decimal number within `bounds`
    RATIO = "ratio"  # W:H, whole numbers, within 1:ASPECT_MAX to ASPECT_MAX:1
    QUALITY = "quality"  # one of QUALITY_VALUES
    TEXT = "text"  # free text (--no)
    NAME = "name"  # a name the caller checks against its own list (--model)
    FLAG = "flag"  # no value: present means on
    REFERENCES = "references"  # one or more style references, up to the next parameter (--sref)
    PROFILE = "profile"  # an optional code: `--p` alone is the member's own profile (--p)
    PICTURE = "picture"  # one picture: a job's tile `12:3` or a link (--oref)
    WEIGHTED_NAME = "weighted name"  # NAME or NAME:WEIGHT (--lora), the weight within LORA_WEIGHT_MIN–MAX


class ParameterError(ValueError):
    """A value the person who typed it must fix; `str()` is one short line for them."""


_WHOLE = re.compile(r"([+-]?)([0-9]+)")
_RATIO = re.compile(r"([0-9]+):([0-9]+)")
_DECIMAL_RATIO = re.compile(r"([0-9]{0,6}\.?[0-9]{1,6}):([0-9]{0,6}\.?[0-9]{1,6})")
_DECIMAL = re.compile(r"[+-]?[0-9]{0,6}\.?[0-9]{1,6}")


def whole_number(digits: str) -> int:
    """`int(digits)`, capped at 10**20: int() refuses strings of thousands of digits."""
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 10**20


def aspect_in_range(ratio: Fraction) -> bool:
    return Fraction(1, ASPECT_MAX) <= ratio <= ASPECT_MAX


@dataclass(frozen=True, slots=True)
class PromptParameter:
    name: str  # without the dashes, lower case
    aliases: tuple[str, ...]
    usage: str  # e.g. "--ar W:H"
    values: str  # what it accepts, for people
    default: str  # what a job gets when neither the prompt nor /settings sets it
    example: str  # a value that works, for "needs a value, e.g. …"
    engine: str  # how it reaches diffusers
    type: ValueType
    bounds: tuple[float, float] | None = None  # a number's range
    cli: bool = True  # `dreamgrid imagine` takes it as a flag (engine/cli.py builds its flags from this table)
    choices: tuple[str, ...] = ()  # a NAME from a fixed list (lower case)

    @property
    def flag(self) -> bool:
        """Takes no value: `--tile`."""
        return self.type is ValueType.FLAG

    def read(self, value: str, shown: str | None = None) -> Any:
        """The value as the engine takes it, or `ParameterError` in words for the person who typed it.

        `shown` is how they wrote it (default `` `--name value` ``), quoted in the error. The
        bot's prompt parser and the engine CLI both read values here: one meaning, one error style.
        """
        shown = shown or f"`--{self.name} {value}`"
        if self.type is ValueType.FLAG:
            return True
        if self.choices:
            if value.lower() not in self.choices:
                raise ParameterError(f"{shown} is not one of ours: use {' or '.join(self.choices)}.")
            return value.lower()
        if self.type in (ValueType.TEXT, ValueType.NAME):
            return value
        if self.type is ValueType.REFERENCES:
            return read_style_references(value, shown)
        if self.type is ValueType.PROFILE:
            return read_profile(value, shown)
        if self.type is ValueType.PICTURE:
            return read_picture_reference(value, shown)
        if self.type is ValueType.RATIO:
            return _read_aspect(shown, value)
        if self.type is ValueType.WEIGHTED_NAME:
            return read_lora(value, shown)
        if self.type is ValueType.QUALITY:
            quality = Fraction(value) if _DECIMAL.fullmatch(value) else None
            if quality is None or quality not in QUALITY_VALUES:
                raise ParameterError(f"{shown} is not a quality: use .25, .5, 1 or 2.")
            return float(quality)
        assert self.bounds is not None, self.name
        low, high = self.bounds
        if self.type is ValueType.DECIMAL:
            if not _DECIMAL.fullmatch(value) or not low <= float(value) <= high:
                raise ParameterError(
                    f"{shown} is out of range: use {_number(low)}–{_number(high)},"
                    f" e.g. `--{self.name} 0.5` or `--{self.name} 2`."
                )
            return float(value)
        whole = _WHOLE.fullmatch(value)
        if not whole:
            raise ParameterError(f"{shown} is not a whole number: use {_number(low)}–{_number(high)}.")
        number = whole_number(whole[2])
        if whole[1] == "-":
            number = -number
        if not low <= number <= high:
            raise ParameterError(f"{shown} is out of range: use {_number(low)}–{_number(high)}.")
        return number


MAX_STYLE_REFERENCES = 5  # a /blend's worth of pictures
MOODBOARD_PREFIX = "mb:"  # `--sref mb:NAME`: a member's moodboard (/moodboard)
_MOODBOARD_REFERENCE = re.compile(r"mb:([a-z0-9_-]{1,32})", re.IGNORECASE)
_TILE_REFERENCE = re.compile(r"([0-9]{1,12}):([1-4])")
_URL_REFERENCE = re.compile(r"<?(https?://\S+?)>?")


def read_style_references(value: str, shown: str) -> tuple[str, ...]:
    """`--sref` words, each `random`, a style code, a job's tile `12:3` or a link, as the bot resolves them."""
    words = value.replace(",", " ").split()
    if not words:
        raise ParameterError(f"{shown} needs a style: `random`, a style code, a job's tile like `12:3`, or a link.")
    if len(words) > MAX_STYLE_REFERENCES:
        raise ParameterError(f"{shown} names {len(words)} styles: use at most {MAX_STYLE_REFERENCES}.")
    references = []
    for word in words:
        if word.lower() == "random":
            references.append("random")
        elif _WHOLE.fullmatch(word) and not word.startswith(("+", "-")):
            code = whole_number(word)
            if not STYLE_CODE_MIN <= code <= STYLE_CODE_MAX:
                raise ParameterError(
                    f"`{word[:24]}` is not a style code: codes are {STYLE_CODE_MIN}–{STYLE_CODE_MAX},"
                    " as `--sref random` prints them."
                )
            references.append(str(code))
        elif board := _MOODBOARD_REFERENCE.fullmatch(word):
            references.append(MOODBOARD_PREFIX + board[1].lower())
        elif tile := _TILE_REFERENCE.fullmatch(word):
            references.append(f"{int(tile[1])}:{tile[2]}")
        elif url := _URL_REFERENCE.fullmatch(word):
            references.append(url[1])
        else:
            raise ParameterError(
                f"`{word[:40]}` is not a style: use `random`, a style code, a job's tile like `12:3`,"
                " or a picture's link."
            )
    return tuple(references)


def read_picture_reference(value: str, shown: str) -> str:
    """An `--oref` picture: a job's tile `12:3` or a link to a picture posted on Discord."""
    if tile := _TILE_REFERENCE.fullmatch(value):
        return f"{int(tile[1])}:{tile[2]}"
    if url := _URL_REFERENCE.fullmatch(value):
        return url[1]
    raise ParameterError(f"{shown} is not a picture: use a job's tile like `12:3`, or a picture's link.")


# --ow: how strongly an --oref subject steers, where an IP-Adapter draws it (Midjourney's range and default).
OBJECT_WEIGHT_MIN, OBJECT_WEIGHT_MAX, OBJECT_WEIGHT_DEFAULT = 0, 1000, 100


def object_image_weight(ow: int) -> float:
    """The IP-Adapter image prompt's --iw for `--ow`: 1 at the default 100 (adapter scale 0.5), 3 from 300 up."""
    if not OBJECT_WEIGHT_MIN <= ow <= OBJECT_WEIGHT_MAX:
        raise ValueError(f"--ow must be between {OBJECT_WEIGHT_MIN} and {OBJECT_WEIGHT_MAX}, got {ow}")
    return min(IMAGE_WEIGHT_MAX, ow / 100)


OWN_PROFILE = "own"  # what `--p` without a code reads as: the member's own liked pictures, frozen when used
PROFILE_CODE_MIN, PROFILE_CODE_MAX = 1, 4_294_967_295


def read_profile(value: str, shown: str) -> str:
    """A `--p` code as the bot looks it up (a style profile now; `/tune`'s LoRA codes would be read here too)."""
    whole = _WHOLE.fullmatch(value)
    if whole is None or whole[1] or not PROFILE_CODE_MIN <= whole_number(whole[2]) <= PROFILE_CODE_MAX:
        raise ParameterError(
            f"{shown} is not a profile code: use `--p` alone for yours, or a code a `--p` result showed."
        )
    return str(whole_number(whole[2]))


def read_lora(value: str, shown: str) -> tuple[str, float]:
    """`name` or `name:0.8` -> (name, weight); the weight defaults to LORA_WEIGHT_DEFAULT."""
    name, sep, weight = value.partition(":")
    if not LORA_NAME.fullmatch(name):
        raise ParameterError(f"{shown} is not a LoRA name: use letters, digits, `-`, `_` or `.`, e.g. `ink:0.8`.")
    if not sep:
        return name, LORA_WEIGHT_DEFAULT
    if not _DECIMAL.fullmatch(weight) or not LORA_WEIGHT_MIN <= float(weight) <= LORA_WEIGHT_MAX:
        raise ParameterError(
            f"{shown}: a LoRA's weight is {_number(LORA_WEIGHT_MIN)}–{_number(LORA_WEIGHT_MAX)}, e.g. `{name}:0.8`."
        )
    return name, float(weight)


def _number(bound: float) -> str:
    """A range's end as people write it: 4294967295, not 4.29497e+09; 0.5 stays 0.5."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def _read_aspect(shown: str, value: str) -> tuple[int, int]:
    ratio = _RATIO.fullmatch(value)
    if not ratio:
        decimal = _DECIMAL_RATIO.fullmatch(value)
        if decimal and Fraction(decimal[2]):
            exact = Fraction(decimal[1]) / Fraction(decimal[2])
            if exact > 0 and max(exact.numerator, exact.denominator) <= 1000 and aspect_in_range(exact):
                raise ParameterError(f"{shown} needs whole numbers: use `{exact.numerator}:{exact.denominator}`.")
        raise ParameterError(f"{shown} is not an aspect ratio: use whole numbers like `3:2`.")
    width, height = (whole_number(side) for side in ratio.groups())
    if not width or not height:
        raise ParameterError(f"{shown} is not an aspect ratio: use whole numbers like `3:2`.")
    exact = Fraction(width, height)
    if not aspect_in_range(exact):
        raise ParameterError(f"{shown} is out of range: use a ratio from 1:{ASPECT_MAX} to {ASPECT_MAX}:1.")
    return exact.numerator, exact.denominator


PARAMETERS: tuple[PromptParameter, ...] = (
    PromptParameter(
        "ar", ("aspect",), "--ar W:H", f"whole numbers, from 1:{ASPECT_MAX} to {ASPECT_MAX}:1", "1:1", "3:2",
        "`width, height = size_for_aspect(W, H, native², size_step(native, family multiple))`", ValueType.RATIO,
    ),
    PromptParameter(
        "seed", (), "--seed N", f"{SEED_MIN}–{SEED_MAX}", "random", "42",
        "one CPU `torch.Generator` per tile; tile 1 uses N, tile i a splitmix64 mix of N and i",
        ValueType.WHOLE, bounds=(SEED_MIN, SEED_MAX),
    ),
    PromptParameter(
        "no", (), "--no a, b", "what to leave out: a comma list, up to the next parameter", "nothing",
        "text, people", "`negative_prompt`", ValueType.TEXT,
    ),
    PromptParameter(
        "chaos", ("c",), "--chaos N", f"{CHAOS_MIN}–{CHAOS_MAX}", str(CHAOS_DEFAULT), "20",
        "per-tile coarse noise on the start latents + prompt-embedding noise", ValueType.WHOLE,
        bounds=(CHAOS_MIN, CHAOS_MAX),
    ),
    PromptParameter(
        "stylize", ("s",), "--stylize N", f"{STYLIZE_MIN}–{STYLIZE_MAX}", str(STYLIZE_DEFAULT), "250",
        "`guidance_scale` 12 at 0 → 7.5 at 100 → 3 at 1000 (piecewise linear), scaled to a model's own guidance at 100",
        ValueType.WHOLE,
        bounds=(STYLIZE_MIN, STYLIZE_MAX),
    ),
    PromptParameter(
        "quality", ("q",), "--quality Q", ".25, .5, 1 or 2 (`0.5` works too)", f"{QUALITY_DEFAULT:g}", ".5",
        f"`num_inference_steps = round({BASE_STEPS} · Q)` → 5 / 10 / 20 / 40", ValueType.QUALITY,
    ),
    PromptParameter(
        "stop", (), "--stop N", f"{STOP_MIN}–{STOP_MAX}: the percent of the steps to run", str(STOP_DEFAULT), "80",
        "interrupt after `max(1, steps·N//100)` steps; decode the x₀ guess", ValueType.WHOLE,
        bounds=(STOP_MIN, STOP_MAX),
    ),
    PromptParameter(
        "tile", (), "--tile", "a flag: tiles that repeat seamlessly", "off", "",
        "circular padding in every UNet/VAE conv for that render", ValueType.FLAG,
    ),
    PromptParameter(
        "draft", (), "--draft", "a flag: a fast, rough grid; Enhance redraws one at full quality", "off", "",
        f"`num_inference_steps` ÷ {DRAFT_STEPS_DIVISOR} (at least 1); tiles at half the side, never under "
        f"{DRAFT_MIN_SIDE} px", ValueType.FLAG,
    ),
    PromptParameter(
        "repeat", ("r",), "--repeat N", f"{REPEAT_MIN}–{REPEAT_MAX}: run the job N times", str(REPEAT_MIN), "4",
        "N separate jobs, each with its own seeds", ValueType.WHOLE, bounds=(REPEAT_MIN, REPEAT_MAX), cli=False,
    ),
    PromptParameter(
        "fast", (), "--fast", "a flag: this job in Fast mode, whatever /relax says", "your /fast or /relax", "",
        "none: the bot's queue starts it before any Relax job; its device time counts as fast time",
        ValueType.FLAG, cli=False,
    ),
    PromptParameter(
        "relax", (), "--relax", "a flag: this job in Relax mode, using no fast time", "your /fast or /relax", "",
        "none: starts when no Fast job waits, the members who relaxed least recently first",
        ValueType.FLAG, cli=False,
    ),
    PromptParameter(
        "model", (), "--model NAME", "one of the server's models", "server's default", "NAME",
        "the pipeline loaded for that model", ValueType.NAME,
    ),
    PromptParameter(
        "iw", (), "--iw W", f"{IMAGE_WEIGHT_MIN:g}–{IMAGE_WEIGHT_MAX:g}: how strongly an image prompt steers",
        f"{IMAGE_WEIGHT_DEFAULT:g}", "2", "IP-Adapter scale 0.5·W; without one, img2img `strength` 1 − 0.25·W",
        ValueType.DECIMAL, bounds=(IMAGE_WEIGHT_MIN, IMAGE_WEIGHT_MAX), cli=False,
    ),
    PromptParameter(
        "sref", (), "--sref REF …", "`random`, a style code, a job's tile `12:3` or a picture's link; up to "
        f"{MAX_STYLE_REFERENCES}", "none", "random",
        "per-channel mean/std of the latents moved toward the references' VAE latents at each step (AdaIN)",
        ValueType.REFERENCES, cli=False,
    ),
    PromptParameter(
        "sw", (), "--sw N", f"{STYLE_WEIGHT_MIN}–{STYLE_WEIGHT_MAX}: how strongly --sref steers",
        str(STYLE_WEIGHT_DEFAULT), "250",
        f"each step closes 1 − exp(−N/{STYLE_WEIGHT_SCALE:g}) of the statistics' gap",
        ValueType.WHOLE, bounds=(STYLE_WEIGHT_MIN, STYLE_WEIGHT_MAX), cli=False,
    ),
    PromptParameter(
        "p", ("personalize",), "--p [CODE]", "alone: the pictures you ❤️ as one style, frozen into a code; or a code",
        "off", "", "as `--sref` with the profile's pictures (at `--sw`)", ValueType.PROFILE, cli=False,
    ),
    PromptParameter(
        "oref", (), "--oref REF", "a job's tile `12:3` or a picture's link: a subject to keep", "none", "12:3",
        "the family's reference-image input (`image=`, Flux.1 Kontext, Flux.2 [klein]), or the IP-Adapter",
        ValueType.PICTURE, cli=False,
    ),
    PromptParameter(
        "ow", (), "--ow N", f"{OBJECT_WEIGHT_MIN}–{OBJECT_WEIGHT_MAX}: how strongly --oref steers (IP-Adapter)",
        str(OBJECT_WEIGHT_DEFAULT), "200", "IP-Adapter scale 0.5 · min(3, N/100)", ValueType.WHOLE,
        bounds=(OBJECT_WEIGHT_MIN, OBJECT_WEIGHT_MAX), cli=False,
    ),
    PromptParameter(
        "lora", (), "--lora NAME[:W]",
        f"a LoRA or style code, weight {LORA_WEIGHT_MIN:g}–{LORA_WEIGHT_MAX:g}; up to {LORA_MAX}", "none", "NAME:0.8",
        "`load_lora_weights(adapter_name=…)`, then `set_adapters(names, weights)` before the batch",
        ValueType.WEIGHTED_NAME, cli=False,
    ),
    PromptParameter(
        "motion", (), "--motion M", "low or high: how much an Animate clip moves", "low", "high",
        f"the clip's frames start from the picture noised to `strength` {MOTION_LOW:g} (low) or {MOTION_HIGH:g} (high)",
        ValueType.NAME, cli=False, choices=("low", "high"),
    ),
    PromptParameter(
        "loop", (), "--loop", "a flag: an Animate clip ends where it began", "off", "",
        "the clip's last frame is its first (`last_image`, or held to its latents by the shipped motion model)",
        ValueType.FLAG, cli=False,
    ),
)  # fmt: skip
PARAMETER_BY_SPELLING = {spelling: p for p in PARAMETERS for spelling in (p.name, *p.aliases)}

# `::` multi-prompts: `hot:: dog::-0.5` weighs each part (a part without a number weighs 1; negative
# weights steer away). Each part is encoded on its own and the embeddings are averaged by weight
# (engine/actions/common.py), so the weights must add up to more than 0, as on Midjourney.
MULTI_WEIGHT_MIN, MULTI_WEIGHT_MAX = -10.0, 10.0
MULTI_EXAMPLE = "hot:: dog::-0.5"
_PART_END = re.compile(r"::(?:\s*([+-]?[0-9]{0,6}\.?[0-9]{1,6})(?![0-9A-Za-z.]))?")


@dataclass(frozen=True, slots=True)
class PromptPart:
    """One part of a `::` multi-prompt: its words and its weight."""

    text: str
    weight: float = 1.0


def prompt_parts(prompt: str) -> tuple[PromptPart, ...]:
    """The parts of a `::` multi-prompt (`cat::2 dog` -> cat 2, dog 1); a prompt without `::` is one part.

    Raises `ParameterError`, one line for the member, for a weight with no words before it, a weight
    out of range, or weights that add up to 0 or less.
    """
    if "::" not in prompt:
        return (PromptPart(prompt.strip()),)
    parts: list[PromptPart] = []
    start = 0
    for end in _PART_END.finditer(prompt):
        text, weight = prompt[start : end.start()].strip(), end[1]
        start = end.end()
        if not text:
            if weight is None:
                continue  # a stray `::`
            raise ParameterError(f"`::{weight}` weighs nothing: put words before it, e.g. `{MULTI_EXAMPLE}`.")
        value = 1.0 if weight is None else float(weight)
        if not MULTI_WEIGHT_MIN <= value <= MULTI_WEIGHT_MAX:
            raise ParameterError(
                f"`::{weight}` is out of range: a part weighs {_number(MULTI_WEIGHT_MIN)} to"
                f" {_number(MULTI_WEIGHT_MAX)}, e.g. `{MULTI_EXAMPLE}`."
            )
        parts.append(PromptPart(text, value))
    tail = prompt[start:].strip()
    if tail:
        parts.append(PromptPart(tail))
    if not parts:
        return (PromptPart(""),)
    total = sum(part.weight for part in parts)
    if total <= 0:
        raise ParameterError(
            f"The `::` weights add up to {total:g}: they must add up to more than 0, e.g. `{MULTI_EXAMPLE}`."
        )
    return tuple(parts)


def is_multi_prompt(prompt: str) -> bool:
    """Whether `prompt` has two or more `::` parts to weigh (a well-formed one: `prompt_parts` checks)."""
    try:
        return len(prompt_parts(prompt)) > 1
    except ParameterError:
        return True


def parts_text(parts: tuple[PromptPart, ...]) -> str:
    """The parts and weights as the embed shows them: `hot 1 · dog −0.5`."""
    return " · ".join(f"{part.text} {_signed(part.weight)}" for part in parts)


def _signed(weight: float) -> str:
    """A weight with a real minus sign, as text shows it: −0.5."""
    return f"{weight:g}".replace("-", "−")


# Guidance at the knots of the stylize mapping.
_STYLIZE_KNOTS = ((0, 12.0), (100, 7.5), (1000, 3.0))


_MASK64 = (1 << 64) - 1


def mix_seed(seed: int, index: int) -> int:
    """splitmix64's finaliser of (seed, index), folded to a valid seed.

    Neighbouring inputs give unrelated outputs, so `--seed 5` and `--seed 6` share no tile.
    """
    z = (seed * 0x9E3779B97F4A7C15 + (index + 1) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    z ^= z >> 31
    return (z ^ (z >> 32)) & SEED_MAX


def tile_seeds(seed: int, count: int = 4) -> tuple[int, ...]:
    """The seeds of a job's tiles: the first is the job's seed, the others mixed from it.

    So `--seed N` draws the same grid again, and the seed shown under a single tile (U1–U4)
    draws that tile again as image 1 of a new grid.
    """
    if not SEED_MIN <= seed <= SEED_MAX:
        raise ValueError(f"seed must be between {SEED_MIN} and {SEED_MAX}, got {seed}")
    return (seed, *(mix_seed(seed, i) for i in range(1, count)))


def size_for_aspect(w: int, h: int, budget_pixels: int, multiple: int = 64) -> tuple[int, int]:
    """(width, height) with aspect ~w:h, area ~budget_pixels, both multiples of `multiple`.

    `size_for_aspect(3, 2, 512 * 512)` -> (640, 448); each side is at least `multiple`.
    """
    checks = (("aspect width", w), ("aspect height", h), ("budget_pixels", budget_pixels), ("multiple", multiple))
    for name, value in checks:
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive whole number, got {value!r}")
    width = math.sqrt(budget_pixels * w / h)
    height = math.sqrt(budget_pixels * h / w)
    return max(multiple, round(width / multiple) * multiple), max(multiple, round(height / multiple) * multiple)


def size_step(native: int, multiple: int = 8) -> int:
    """The step `--ar` sizes come in on a model trained at `native` px whose family draws sides in
    multiples of `multiple`: native/8 (at least 8) when that is such a multiple, else the coarsest
    multiple of it below native/8 that divides `native`, so 1:1 stays the native size.

    Qwen-Image's 1328 px (16 x 83) gives 16: native/8 would be 166, which a 2x2-packing family
    cannot draw, and 176 would turn 1:1 into 1408 px."""
    step = max(8, native // 8)
    if step % multiple == 0:
        return step
    for candidate in range(step - step % multiple, 0, -multiple):
        if native % candidate == 0:
            return candidate
    return multiple


def tile_size(w: int, h: int, native: int, multiple: int = 8) -> tuple[int, int]:
    """The tile size for `--ar w:h` on a model trained at `native` px: its area, sides in `size_step`s."""
    return size_for_aspect(w, h, native * native, size_step(native, multiple))


def aspect_buckets(native: int, max_aspect: int = ASPECT_MAX, multiple: int = 8) -> list[tuple[int, int]]:
    """Every tile size a member can get from `--ar` (whole numbers up to max_aspect:1), squarest first.

    Many ratios round to one size, so a model has a few dozen at most: the shapes a compiled UNet
    is warmed up for (engine/optimize.py).
    """
    sizes = {
        tile_size(w, h, native, multiple)
        for w in range(1, 16 * max_aspect + 1)
        for h in range(1, 16 * max_aspect + 1)
        if w <= max_aspect * h and h <= max_aspect * w
    }
    return sorted(sizes, key=lambda s: (max(s) / min(s), -s[0]))


def quality_text(q: float) -> str:
    """How Midjourney writes a quality: .25, .5, 1, 2."""
    return f"{q:g}".removeprefix("0")


def steps_for_quality(q: float, base: int = BASE_STEPS) -> int:
    if q not in QUALITY_VALUES:
        raise ValueError(f"--q must be one of {', '.join(f'{v:g}' for v in QUALITY_VALUES)}, got {q:g}")
    return max(1, round(base * q))


def guidance_for_stylize(s: int | float) -> float:
    if not STYLIZE_MIN <= s <= STYLIZE_MAX:
        raise ValueError(f"--stylize must be between {STYLIZE_MIN} and {STYLIZE_MAX}, got {s:g}")
    for (s0, g0), (s1, g1) in zip(_STYLIZE_KNOTS, _STYLIZE_KNOTS[1:], strict=False):
        if s <= s1:
            return round(g0 + (g1 - g0) * (s - s0) / (s1 - s0), 3)
    raise AssertionError("unreachable")


def guidance_at_stylize(stylize: int | float, base_guidance: float | None = None) -> float:
    """`guidance_scale` for `--stylize`, given the model's guidance at the default stylize.

    `base_guidance` is GUIDANCE_SCALE (or a model's MODEL_DEFAULTS guidance): what a job at the
    default --stylize gets; stylize scales it from there. None: the mapping's own 7.5 at 100.
    """
    guidance = guidance_for_stylize(stylize)
    if base_guidance is None:
        return guidance
    return round(guidance * base_guidance / guidance_for_stylize(STYLIZE_DEFAULT), 3)


def request_fields(
    values: Mapping[str, Any],
    *,
    native: int,
    base_steps: int = BASE_STEPS,
    base_guidance: float | None = None,
    max_steps: int = MAX_STEPS,
    size: int | None = None,
    size_multiple: int = 8,
) -> dict[str, Any]:
    """What the prompt parameters in `values` (by name, as `PromptParameter.read` gives them; a
    name left out takes its default) ask of a `RenderRequest`: each parameter's meaning, once.

    The bot (`bot.spec_builders.imagine_spec`) and `dreamgrid imagine` (`engine.cli`) both build their
    requests here. `size`: the side of the pixel budget per tile, when not the model's `native`;
    `size_multiple`: what the model's sides must be multiples of (16 for Flux-style families).
    """
    w, h = values.get("ar") or (1, 1)
    budget = size or native
    steps = min(steps_for_quality(values.get("quality", QUALITY_DEFAULT), base=base_steps), max_steps)
    if values.get("draft"):
        budget = max(DRAFT_MIN_SIDE, budget // 2)
        steps = max(1, round(steps / DRAFT_STEPS_DIVISOR))
    width, height = size_for_aspect(w, h, budget * budget, size_step(native, size_multiple))
    return {
        "width": width,
        "height": height,
        "steps": steps,
        "guidance_scale": guidance_at_stylize(values.get("stylize", STYLIZE_DEFAULT), base_guidance),
        "negative_prompt": values.get("no", ""),
        "chaos": values.get("chaos", CHAOS_DEFAULT),
        "stop": values.get("stop", STOP_DEFAULT),
        "tile": values.get("tile", False),
        # names only: the bot finds each one's file (`path`) before queueing
        "loras": tuple(LoraWeight(name, "", weight) for name, weight in values.get("lora", ())),
        "loop": values.get("loop", False),
        **({"strength": MOTIONS[values["motion"]]} if "motion" in values else {}),
    }


def img2img_steps(steps: int, strength: float, minimum: int = 2) -> int:
    """Steps to ask for so that image-to-image at `strength` runs at least `minimum` of them.

    diffusers runs int(steps * strength) steps: 5 steps (--q .25) at Upscale (Subtle)'s 0.1 would
    run none.
    """
    if not 0 < strength <= 1:
        raise ValueError(f"strength must be in (0, 1], got {strength}")
    needed = steps
    while int(needed * strength) < minimum:
        needed += 1
    return needed


def steps_for_stop(steps: int, stop: int) -> int:
    """How many denoising steps `--stop` lets run (matches FakeEngine)."""
    if not STOP_MIN <= stop <= STOP_MAX:
        raise ValueError(f"--stop must be between {STOP_MIN} and {STOP_MAX}, got {stop}")
    return max(1, steps * stop // 100)


def parse_aspect(text: str) -> tuple[int, int]:
    """'3:2' -> (3, 2); whole numbers only, as in Midjourney."""
    parts = text.split(":")
    if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"--ar must look like 3:2 with whole numbers, got {text!r}")
    return int(parts[0]), int(parts[1])


def _check_image_weight(iw: float) -> None:
    if not IMAGE_WEIGHT_MIN <= iw <= IMAGE_WEIGHT_MAX:
        raise ValueError(f"--iw must be between {IMAGE_WEIGHT_MIN:g} and {IMAGE_WEIGHT_MAX:g}, got {iw:g}")


def ip_adapter_scale(iw: float) -> float:
    """IP-Adapter's scale for `--iw`: 0.5 at the default 1 (the balance diffusers' docs suggest), 1.5 at 3."""
    _check_image_weight(iw)
    return 0.5 * iw


def style_strength(sw: int | float) -> float:
    """How much of the gap to the style reference's statistics `--sw` closes at each step (0–1)."""
    if not STYLE_WEIGHT_MIN <= sw <= STYLE_WEIGHT_MAX:
        raise ValueError(f"--sw must be between {STYLE_WEIGHT_MIN} and {STYLE_WEIGHT_MAX}, got {sw:g}")
    return 1.0 - math.exp(-sw / STYLE_WEIGHT_SCALE)


def image_prompt_strength(iw: float) -> float:
    """Image-to-image strength for `--iw` when no IP-Adapter is installed.

    1 at --iw 0 (the picture is all noise: text alone), 0.75 at the default 1 (Vary Strong: the
    picture's layout and colours, redrawn), 0.25 at 3 (close to the picture).
    """
    _check_image_weight(iw)
    return 1.0 - 0.25 * iw
