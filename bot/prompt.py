"""Parse `/imagine` prompts written in Midjourney's syntax.

A prompt is a description followed by parameters, e.g.
`a dream of a distant galaxy --ar 3:2 --seed 7 --no text`. `parse_prompt` turns it into one
`ParsedPrompt` per job, or raises `PromptError`, whose message is one short line to show the
member who typed it. A parameter the prompt does not set is `None`, so the caller applies the
member's and the server's defaults (what the prompt says wins over `/settings`).

| Parameter | Alias | Values | Default |
|-----------|-------|--------|---------|
| `--ar W:H` | `--aspect` | whole numbers, from 1:4 to 4:1 | 1:1 |
| `--seed N` |  | 0–4294967295 | random |
| `--no a, b` |  | what to leave out: a comma list, up to the next parameter | nothing |
| `--chaos N` | `--c` | 0–100 | 0 |
| `--stylize N` | `--s` | 0–1000 | 100 |
| `--quality Q` | `--q` | .25, .5, 1 or 2 (`0.5` works too) | 1 |
| `--stop N` |  | 10–100: the percent of the steps to run | 100 |
| `--tile` |  | a flag: tiles that repeat seamlessly | off |
| `--draft` |  | a flag: a fast, rough grid; Enhance redraws one at full quality | off |
| `--repeat N` | `--r` | 1–40: run the job N times | 1 |
| `--fast` |  | a flag: this job in Fast mode, whatever /relax says | your /fast or /relax |
| `--relax` |  | a flag: this job in Relax mode, using no fast time | your /fast or /relax |
| `--model NAME` |  | one of the server's models | server's default |
| `--iw W` |  | 0–3: how strongly an image prompt steers | 1 |
| `--sref REF …` |  | `random`, a style code, a job's tile `12:3` or a picture's link; up to 5 | none |
| `--sw N` |  | 0–1000: how strongly --sref steers | 100 |
| `--p [CODE]` | `--personalize` | alone: the pictures you ❤️ as one style, frozen into a code; or a code | off |
| `--oref REF` |  | a job's tile `12:3` or a picture's link: a subject to keep | none |
| `--ow N` |  | 0–1000: how strongly --oref steers (IP-Adapter) | 100 |
| `--lora NAME[:W]` |  | a LoRA or style code, weight 0–2; up to 4 | none |
| `--motion M` |  | low or high: how much an Animate clip moves | low |
| `--loop` |  | a flag: an Animate clip ends where it began | off |

`--NAME` runs your own option from `/prefer option set`. `a::2 b::-0.5` weighs the parts of a
multi-prompt (`engine.params.prompt_parts`; a part without a number weighs 1). This table is `engine.params.PARAMETERS`
written out (tests/test_parameters.py keeps this copy and the README's equal to it).

- Names are case-insensitive, and `—` or `–` works in place of `--` (phones turn `--` into `—`).
- Parameters come after the description, each at most once (`--lora` may come up to 4 times).
- `<lora:NAME>` or `<lora:NAME:W>` anywhere in the description is `--lora NAME:W` (A1111's way).
- `{red, green} bird` runs one job per choice; groups nest (up to 8 deep) and multiply, and can
  hold parameters (`--ar {1:1, 3:2}`). Write `\\,`, `\\{` or `\\}` for a literal comma or brace.
- The `/prefer suffix` is added to every prompt; a parameter the prompt sets wins over the suffix's.
- At most 1,500 characters, and at most 40 jobs (choices × `--repeat`) per prompt (the member's
  waiting limit, `max_queued_per_user`, applies too; bot.cogs.imagine asks before more than 5).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple, TypeVar

from engine import params as render_params
from engine.params import PARAMETER_BY_SPELLING, ParameterError, ValueType

MAX_PROMPT_CHARS = 1500
MAX_JOBS = 40
MAX_NESTING = 8  # levels of {braces}
SEED_RANGE = PARAMETER_BY_SPELLING["seed"].bounds
CHAOS_RANGE = PARAMETER_BY_SPELLING["chaos"].bounds
STYLIZE_RANGE = PARAMETER_BY_SPELLING["stylize"].bounds
STOP_RANGE = PARAMETER_BY_SPELLING["stop"].bounds
MAX_ASPECT = render_params.ASPECT_MAX  # the ratio lies between 1:MAX_ASPECT and MAX_ASPECT:1
QUALITIES = render_params.QUALITY_VALUES

# Every spelling, lower case, to the parameter it means.
_ALIASES = {spelling: parameter.name for spelling, parameter in PARAMETER_BY_SPELLING.items()}
PARAMETER_NAMES = frozenset(_ALIASES)  # every built-in spelling, without the dashes

# `--ar`, `—ar`, `–ar`, `—-ar`, and the minus signs and hyphens keyboards and phones put in for `-`.
_MARKER = re.compile(r"(?:[-‐‑−－]{2}|[—–―]-?)([A-Za-z]\S*)")
_ESCAPABLE = "\\,{}"
_SUFFIX = "your /prefer suffix"
_NO_OPTIONS: Mapping[str, str] = MappingProxyType({})
_MAX_ERROR_CHARS = 190


class PromptError(ValueError):
    """A prompt the member has to fix. `str()` is one short line, written for them."""

    def __init__(self, message: str) -> None:
        message = " ".join(message.split())
        if len(message) > _MAX_ERROR_CHARS:
            message = message[: _MAX_ERROR_CHARS - 1] + "…"
        super().__init__(message)


@dataclass(frozen=True, slots=True, kw_only=True)
class ParsedPrompt:
    """One job. `None` (or `""`/`False`) means the prompt did not set it: apply the defaults.

    `raw` is the prompt as it was run (choices picked, options and suffix written out,
    `--repeat` left out), for the embed and the Remix modal: parse it again with no suffix
    and no options and you get this job back.
    """

    text: str
    negative: str = ""
    aspect: tuple[int, int] | None = None  # reduced: `--ar 1920:1080` is (16, 9)
    seed: int | None = None
    chaos: int | None = None
    stylize: int | None = None
    quality: float | None = None
    stop: int | None = None
    tile: bool = False
    draft: bool = False  # --draft: a fast, rough grid
    mode: str | None = None  # "fast" or "relax" (`--fast`, `--relax`); None: the member's /fast or /relax
    model: str | None = None
    image_weight: float | None = None  # --iw: only with an image prompt
    # --sref: `random`, style codes, job tiles ("12:3") and links, as typed; the bot resolves them
    style_refs: tuple[str, ...] = ()
    style_weight: int | None = None  # --sw
    profile: str | None = None  # --p: `engine.params.OWN_PROFILE` (the member's own) or a profile code
    object_ref: str | None = None  # --oref: a job's tile ("12:3") or a link, resolved by the bot
    object_weight: int | None = None  # --ow
    loras: tuple[tuple[str, float], ...] = ()  # --lora and <lora:…>: (name, weight), in the order given
    motion: str | None = None  # --motion low|high: how much an Animate clip moves
    loop: bool = False  # --loop: an Animate clip ends on its first frame
    raw: str = ""
    # How many copies `--repeat` asked for (this job is one of them). Not part of the job itself:
    # `raw` leaves --repeat out, so it takes no part in comparisons.
    repeat: int = field(default=1, compare=False)

    def parameter_values(self) -> dict[str, _Value]:
        """What this prompt set, by `engine.params` parameter name (as `PromptParameter.read` gives
        each value); what it left unset is left out, so the caller's defaults apply."""
        values: dict[str, _Value] = {}
        for name, attribute in _ATTRIBUTE_OF.items():
            value = getattr(self, attribute)
            if value is not None and value is not False and value != "" and value != ():
                values[name] = value
        if self.mode is not None:
            values[self.mode] = True  # --fast or --relax
        if self.repeat != 1:
            values["repeat"] = self.repeat
        return values

    def to_text(self) -> str:
        """The job as a canonical prompt: long parameter names in a fixed order."""
        parts = [_escape(self.text)] if self.text else []
        if self.aspect is not None:
            parts.append(f"--ar {self.aspect[0]}:{self.aspect[1]}")
        if self.seed is not None:
            parts.append(f"--seed {self.seed}")
        if self.chaos is not None:
            parts.append(f"--chaos {self.chaos}")
        if self.stylize is not None:
            parts.append(f"--stylize {self.stylize}")
        if self.quality is not None:
            parts.append(f"--quality {render_params.quality_text(self.quality)}")
        if self.stop is not None:
            parts.append(f"--stop {self.stop}")
        if self.tile:
            parts.append("--tile")
        if self.draft:
            parts.append("--draft")
        if self.mode is not None:
            parts.append(f"--{self.mode}")
        if self.model is not None:
            parts.append(f"--model {_escape(self.model)}")
        if self.image_weight is not None:
            parts.append(f"--iw {self.image_weight:g}")
        if self.style_refs:
            parts.append(f"--sref {' '.join(self.style_refs)}")
        if self.style_weight is not None:
            parts.append(f"--sw {self.style_weight}")
        if self.profile is not None:
            parts.append("--p" if self.profile == render_params.OWN_PROFILE else f"--p {self.profile}")
        if self.object_ref is not None:
            parts.append(f"--oref {self.object_ref}")
        if self.object_weight is not None:
            parts.append(f"--ow {self.object_weight}")
        parts.extend(f"--lora {_lora_text(name, weight)}" for name, weight in self.loras)
        if self.motion is not None:
            parts.append(f"--motion {self.motion}")
        if self.loop:
            parts.append("--loop")
        if self.negative:
            parts.append(f"--no {_escape(self.negative)}")
        return " ".join(parts)


# Midjourney's parameters that are not parameters here, and what does their job (one short line each).
# Those a server may define as its own aliases (`ALIASABLE`, `/config set aliases`) say so.
_DEFINABLE = "or an admin can define it with `/config set aliases`"
_STYLE_REF = "use `--sref` for a picture's style, or put the picture first in your prompt (an image prompt)."
_MODELS = f"pick one of this server's models with `--model NAME` (`/help` lists them), {_DEFINABLE}."
_LITERAL = f"for a more literal picture, use a low `--stylize` (e.g. `--stylize 0`), {_DEFINABLE}."
_UNEXPECTED = f"use `--chaos` for unexpected grids and `--stylize` for more or less artistic ones, {_DEFINABLE}."
_UPSCALE = "use Upscale (Subtle) or (Creative) under a picture."
_VIDEO = "press Animate under a picture (or use `/animate`): a clip starts from a picture."
ELSEWHERE: Mapping[str, str] = MappingProxyType(
    dict(
        sv="`--sref` has one style version here: leave `--sv` out.",
        cref="use `--oref` to keep a character or object from a picture (and `--ow` for how strongly).",
        cw="use `--oref` to keep a character or object from a picture (and `--ow` for how strongly).",
        v=_MODELS,
        version=_MODELS,
        niji=_MODELS,
        test=_MODELS,
        testp=_MODELS,
        style=_LITERAL,
        raw=_LITERAL,
        exp=_UNEXPECTED,
        weird=_UNEXPECTED,
        turbo=f"use `--fast`, {_DEFINABLE}.",
        hd=f"use Upscale (Subtle) or (Creative) under a picture, {_DEFINABLE}.",
        uplight=_UPSCALE,
        upbeta=_UPSCALE,
        upanime=_UPSCALE,
        w="use `--ar W:H`: the size follows from the model.",
        h="use `--ar W:H`: the size follows from the model.",
        sameseed="use `--seed N`: the same seed draws the same grid again.",
        zoom="press Custom Zoom under a picture, and type `--zoom` there.",
        video=_VIDEO,
        end="give `/animate` an `end` picture: the clip ends on it.",
        bs=_VIDEO,
    )
)

# Midjourney's names a server may define as its own aliases (`/config set aliases`): `--v 7` for a model,
# `--raw` for settings. Built-in parameters are never shadowed.
ALIASABLE = frozenset({"v", "version", "niji", "raw", "style", "exp", "weird", "hd", "test", "testp", "turbo"})
_SAME_ALIAS = {"version": "v"}  # Midjourney's `--version 7` is `--v 7`
_DEFINE_ALIAS = "(an admin can define it: `/config set aliases`)"


def alias_key(name: str, value: str | None = None) -> str:
    """How an alias is stored and looked up: `v 7`, `raw` (lower case, `--version` as `--v`)."""
    name = name.lower().lstrip("-—–")
    name = _SAME_ALIAS.get(name, name)
    return f"{name} {value.lower()}" if value else name


# Which ParsedPrompt attribute holds each parameter's value (--fast/--relax share `mode`; --repeat
# is how many copies were made). tests/test_parameters.py walks every parameter through it.
_ATTRIBUTE_OF = {
    "ar": "aspect",
    "seed": "seed",
    "no": "negative",
    "chaos": "chaos",
    "stylize": "stylize",
    "quality": "quality",
    "stop": "stop",
    "tile": "tile",
    "draft": "draft",
    "model": "model",
    "iw": "image_weight",
    "sref": "style_refs",
    "sw": "style_weight",
    "p": "profile",
    "oref": "object_ref",
    "ow": "object_weight",
    "lora": "loras",
    "motion": "motion",
    "loop": "loop",
}
REPEATABLE = frozenset({"lora"})  # parameters a prompt may give more than once
# A1111's LoRA syntax inside the description: <lora:NAME> or <lora:NAME:WEIGHT>.
_LORA_TAG = re.compile(r"<lora:([^<>\s]*)>", re.IGNORECASE)


def parse_prompt(
    text: str,
    *,
    suffix: str = "",
    options: Mapping[str, str] = _NO_OPTIONS,
    aliases: Mapping[str, str] = _NO_OPTIONS,
    models: Sequence[str] = (),
    max_jobs: int = MAX_JOBS,
    allow_empty: bool = False,
) -> list[ParsedPrompt]:
    """Parse what the member typed into the jobs to run, in order.

    `suffix` is the member's `/prefer suffix`; `options` maps their `/prefer option` names to
    parameter strings (`{"mine": "--ar 3:2 --chaos 20"}` makes `--mine` mean that); `aliases` are the
    server's (`alias_key` -> parameters: `{"v 7": "--model dream7"}` makes `--v 7` mean that); `models`,
    when not empty, are the model names `--model` may pick. `allow_empty`: the description may be
    left out (a /blend's pictures are its subject). Raises `PromptError` and nothing else.
    """
    # 1. check the size, that it is text, and that there is something to draw
    for where, value in ((None, text), (_SUFFIX, suffix), *((f"`--{n}`", v) for n, v in options.items())):
        if any("\ud800" <= c <= "\udfff" for c in value):
            # A lone UTF-16 half: a broken paste. It can't be stored or shown, so say so rather than crash.
            raise _error("Your prompt has a broken character in it (half of an emoji?): retype it.", where)
    length = len(text.strip())
    if length > MAX_PROMPT_CHARS:
        raise PromptError(f"Your prompt is {length:,} characters long: the limit is {MAX_PROMPT_CHARS:,}.")
    if not length and not allow_empty:
        raise PromptError("Describe what to draw first.")

    # 2. find the {choices} and count the jobs before making any
    prompt_tree = _parse_braces(text, None)
    suffix_tree = _parse_braces(suffix, _SUFFIX)
    choices = _count(prompt_tree) * _count(suffix_tree)
    if choices > max_jobs:
        raise _too_many(choices, max_jobs)

    # 3. parse each combination of choices
    lowered = {name.lower().lstrip("-—–"): value for name, value in options.items()}
    parsed = [
        _parse_job(prompt, extra, lowered, aliases, models, allow_empty)
        for prompt in _expand(prompt_tree)
        for extra in _expand(suffix_tree)
    ]

    # 4. make `--repeat` copies
    total = sum(repeat for _, repeat in parsed)
    if total > max_jobs:
        raise _too_many(total, max_jobs)
    return [replace(job, repeat=repeat) for job, repeat in parsed for _ in range(repeat)]


# --- {choices} ---------------------------------------------------------------------------------

# A sequence is a list of literal strings and groups; a group is a tuple of sequences (its choices).
_Seq = list  # list[str | tuple[_Seq, ...]]


def _parse_braces(text: str, origin: str | None) -> _Seq:
    seqs: list[_Seq] = [[]]  # the sequence being built: the top level, then one per open brace
    groups: list[list[_Seq]] = []  # the finished choices of each open brace
    buf: list[str] = []

    def flush() -> None:
        if buf:
            seqs[-1].append("".join(buf))
            buf.clear()

    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            buf.append(text[i + 1])
            i += 2
            continue
        if char == "{":
            if len(groups) == MAX_NESTING:
                raise _error(f"Braces are nested too deeply: use at most {MAX_NESTING} levels.", origin)
            flush()
            groups.append([])
            seqs.append([])
        elif char == "}":
            if not groups:
                raise _error("Unbalanced braces: a `}` has no matching `{` (write `\\}` for a brace).", origin)
            flush()
            group = groups.pop()
            group.append(seqs.pop())
            seqs[-1].append(tuple(group))
        elif char == "," and groups:
            flush()
            groups[-1].append(seqs.pop())
            seqs.append([])
        else:
            buf.append(char)
        i += 1
    if groups:
        raise _error("Unbalanced braces: a `{` has no matching `}` (write `\\{` for a brace).", origin)
    flush()
    return seqs[0]


def _count(seq: _Seq) -> int:
    total = 1
    for item in seq:
        if isinstance(item, tuple):
            total *= sum(_count(choice) for choice in item)
    return total


def _expand(seq: _Seq) -> list[str]:
    out = [""]
    for item in seq:
        if isinstance(item, str):
            out = [head + item for head in out]
        else:
            tails = [tail for choice in item for tail in _expand(choice)]
            out = [head + tail for head in out for tail in tails]
    return out


def _too_many(count: int, cap: int) -> PromptError:
    shown = f"{count:,}" if count <= 1_000_000 else "over a million"
    return PromptError(
        f"This prompt makes {shown} jobs: the limit is {cap}. Use fewer {{choices}} or a smaller `--repeat`."
    )


# --- one job -----------------------------------------------------------------------------------


class _Token(NamedTuple):
    text: str
    origin: str | None  # None: typed in the prompt; else where it came from, for error messages


@dataclass(slots=True)
class _Param:
    key: str  # what it means: "ar", "chaos", ...
    name: str  # how it was spelled, lower case: "aspect", "c", ...
    values: list[str]
    origin: str | None


# A checked parameter's value: what `_check_value` returns for each kind of parameter.
_Value = str | bool | int | float | tuple[int, int] | tuple[str, ...]
_T = TypeVar("_T", str, bool, int, float)


def _get(values: Mapping[str, _Value], key: str, kind: type[_T]) -> _T | None:
    """`values[key]` as the type that `_check_value` gives that key, or None when the prompt left it out."""
    value = values.get(key)
    if value is None:
        return None
    assert isinstance(value, kind), (key, value)
    return value


def _get_references(values: Mapping[str, _Value]) -> tuple[str, ...]:
    value = values.get("sref", ())
    assert isinstance(value, tuple) and all(isinstance(word, str) for word in value), value
    return tuple(str(word) for word in value)


def _get_aspect(values: Mapping[str, _Value]) -> tuple[int, int] | None:
    value = values.get("ar")
    if value is None:
        return None
    assert isinstance(value, tuple) and len(value) == 2 and all(isinstance(side, int) for side in value), value
    return int(value[0]), int(value[1])


def _parse_job(
    prompt: str,
    suffix: str,
    options: Mapping[str, str],
    aliases: Mapping[str, str],
    models: Sequence[str],
    allow_empty: bool = False,
) -> tuple[ParsedPrompt, int]:
    # 1. split the description from the parameters
    text, params = _scan(_tokens(prompt, None, options, aliases))
    text, tags = _lora_tags(text, None)
    if not text and not allow_empty:
        raise PromptError("Describe what to draw first.")
    suffix_text, suffix_params = _scan(_tokens(suffix, _SUFFIX, options, aliases))
    suffix_text, suffix_tags = _lora_tags(suffix_text, _SUFFIX)
    text += suffix_text

    # 2. each parameter once (LoRAs once each); the prompt's win over the suffix's
    chosen: dict[str, _Param] = {}
    loras = _pick_loras([*tags, *(p for p in params if p.key in REPEATABLE)])
    for param in params:
        if param.key not in REPEATABLE:
            _check_duplicate(chosen, param)
            chosen[param.key] = param
    in_suffix: dict[str, _Param] = {}
    for param in suffix_params:
        if param.key not in REPEATABLE:
            _check_duplicate(in_suffix, param)
            in_suffix[param.key] = param
            chosen.setdefault(param.key, param)
    suffix_loras = _pick_loras([*suffix_tags, *(p for p in suffix_params if p.key in REPEATABLE)])
    loras.update((name, param) for name, param in suffix_loras.items() if name not in loras)
    if len(loras) > render_params.LORA_MAX:
        raise PromptError(f"This prompt names {len(loras)} LoRAs: the most is {render_params.LORA_MAX}.")

    # 3. check the values
    values = {key: _value(param, models) for key, param in chosen.items()}
    if "fast" in values and "relax" in values:
        raise PromptError("Use `--fast` or `--relax`, not both.")
    description = " ".join(text)
    try:  # `hot:: dog::-0.5`: the parts' weights are checked here, read by the engine
        render_params.prompt_parts(description)
    except ParameterError as exc:
        raise PromptError(str(exc)) from None
    negative = _get(values, "no", str) or ""

    # 4. write it out as it will run
    raw = [_escape(description)]
    for key, param in chosen.items():
        if key == "repeat":
            continue
        value = negative if key == "no" else " ".join(param.values)
        raw.append(f"--{param.name} {_escape(value)}" if value else f"--{param.name}")
    lora_values = [_lora_value(param) for param in loras.values()]
    raw.extend(f"--lora {_lora_text(*value)}" for value in lora_values)
    written = " ".join(part for part in raw if part)
    if len(written) > MAX_PROMPT_CHARS:
        raise PromptError(
            f"This prompt is {len(written):,} characters long once expanded: the limit is {MAX_PROMPT_CHARS:,}."
        )
    job = ParsedPrompt(
        text=description,
        negative=negative,
        aspect=_get_aspect(values),
        seed=_get(values, "seed", int),
        chaos=_get(values, "chaos", int),
        stylize=_get(values, "stylize", int),
        quality=_get(values, "quality", float),
        stop=_get(values, "stop", int),
        tile=_get(values, "tile", bool) or False,
        draft=_get(values, "draft", bool) or False,
        mode="fast" if "fast" in values else "relax" if "relax" in values else None,
        model=_get(values, "model", str),
        image_weight=_get(values, "iw", float),
        style_refs=_get_references(values),
        style_weight=_get(values, "sw", int),
        profile=_get(values, "p", str),
        object_ref=_get(values, "oref", str),
        object_weight=_get(values, "ow", int),
        loras=tuple(lora_values),
        motion=_get(values, "motion", str),
        loop=_get(values, "loop", bool) or False,
        raw=written,
    )
    repeat = _get(values, "repeat", int)
    return job, 1 if repeat is None else repeat


def _tokens(text: str, origin: str | None, options: Mapping[str, str], aliases: Mapping[str, str]) -> list[_Token]:
    """Split on whitespace and write out `--option`s and the server's aliases (once: their own words
    are kept as they are)."""
    tokens: list[_Token] = []
    words = text.split()
    i = 0
    while i < len(words):
        word = words[i]
        i += 1
        marker = _MARKER.fullmatch(word)
        if marker:
            name = marker[1].lower()
            if name not in _ALIASES and name in options:
                where = f"`--{_show(name)}`"
                tokens.extend(_Token(part, where) for part in options[name].split())
                continue
            if name not in _ALIASES and name in ALIASABLE and aliases:
                following = words[i] if i < len(words) and not _MARKER.fullmatch(words[i]) else None
                found = _alias(name, following, aliases, origin)
                if found is not None:
                    key, expansion = found
                    i += 1 if " " in key else 0
                    where = f"`--{_show(key)}`, this server's alias"
                    tokens.extend(_Token(part, where) for part in expansion.split())
                    continue
        tokens.append(_Token(word, origin))
    return tokens


def _alias(name: str, following: str | None, aliases: Mapping[str, str], origin: str | None) -> tuple[str, str] | None:
    """The server's alias for `--name [following]` as (its key, its parameters), or None when the
    server has none by that name (the parser then points to what does the job here)."""
    if following is not None and alias_key(name, following) in aliases:
        key = alias_key(name, following)
        return key, aliases[key]
    if alias_key(name) in aliases:
        return alias_key(name), aliases[alias_key(name)]
    valued = [key for key in aliases if key.startswith(alias_key(name) + " ")]
    if not valued:
        return None
    listed = " or ".join(f"`--{_show(key)}`" for key in valued[:4])
    if following is None:
        raise _error(f"`--{_show(name)}` needs a value on this server: {listed}.", origin)
    raise _error(f"`--{_show(name)} {_show(following)}` isn't defined on this server: use {listed}.", origin)


def _scan(tokens: list[_Token]) -> tuple[list[str], list[_Param]]:
    """The description's words, then the parameters with their values (not yet checked)."""

    def is_marker(i: int) -> bool:
        return _MARKER.fullmatch(tokens[i].text) is not None

    i, n = 0, len(tokens)
    text = []
    while i < n and not is_marker(i):
        text.append(tokens[i].text)
        i += 1
    params = []
    while i < n:
        token = tokens[i]
        marker = _MARKER.fullmatch(token.text)
        assert marker is not None  # the loops stop on markers only
        spelled = marker[1]
        key = _ALIASES.get(spelled.lower())
        if key is None:
            pointer = ELSEWHERE.get(spelled.lower())
            if pointer is not None:
                raise _error(f"`--{spelled.lower()}` isn't a parameter here: {pointer}", token.origin)
            raise _error(f"Unknown parameter `--{_show(spelled)}`.", token.origin)
        i += 1
        start = i
        if key == "no" or PARAMETER_BY_SPELLING[key].type is ValueType.REFERENCES:
            while i < n and not is_marker(i):
                i += 1
        elif not PARAMETER_BY_SPELLING[key].flag and i < n and not is_marker(i):
            i += 1
        param = _Param(key, spelled.lower(), [t.text for t in tokens[start:i]], token.origin)
        params.append(param)
        if i < n and not is_marker(i):
            shown = _show(" ".join([f"--{param.name}", *param.values]))
            raise _error(
                f"Unexpected `{_show(tokens[i].text)}` after `{shown}`: put the description before the parameters.",
                tokens[i].origin,
            )
    return text, params


def _lora_tags(words: list[str], origin: str | None) -> tuple[list[str], list[_Param]]:
    """The description's words without its `<lora:NAME:W>` tags, and the tags as `--lora` parameters."""
    joined = " ".join(words)
    tags = [_Param("lora", "lora", [match[1]], origin) for match in _LORA_TAG.finditer(joined)]
    if not tags:
        return words, []
    return _LORA_TAG.sub(" ", joined).split(), tags


def _pick_loras(params: Sequence[_Param]) -> dict[str, _Param]:
    """The LoRAs given, by name (lower case), each once."""
    picked: dict[str, _Param] = {}
    for param in params:
        name = (param.values[0] if param.values else "").partition(":")[0]
        if name.lower() in picked:
            raise _error(f"The LoRA `{_show(name)}` is given twice: keep one.", param.origin)
        picked[name.lower()] = param
    return picked


def _lora_value(param: _Param) -> tuple[str, float]:
    value = _value(param, ())
    assert isinstance(value, tuple) and isinstance(value[0], str), value  # PromptParameter.read's (name, weight)
    return value[0], float(value[1])


def _lora_text(name: str, weight: float) -> str:
    return name if weight == render_params.LORA_WEIGHT_DEFAULT else f"{name}:{weight:g}"


def _check_duplicate(seen: Mapping[str, _Param], param: _Param) -> None:
    first = seen.get(param.key)
    if first is None:
        return
    if first.name == param.name:
        message = f"`--{_show(param.name)}` is given twice: keep one."
    else:
        message = f"`--{first.name}` and `--{param.name}` are the same parameter: keep one."
    raise _error(message, param.origin)


def _value(param: _Param, models: Sequence[str]) -> _Value:
    try:
        return _check_value(param, models)
    except PromptError as e:
        raise _error(str(e), param.origin) from None


def _check_value(param: _Param, models: Sequence[str]) -> _Value:
    parameter = PARAMETER_BY_SPELLING[param.key]
    name = param.name
    if parameter.flag:
        return True
    values = param.values
    if parameter.type is ValueType.TEXT:  # "a,b , c" -> "a, b, c"
        text = ", ".join(item for item in (part.strip() for part in " ".join(values).split(",")) if item)
        values = [text] if text else []
    if parameter.type is ValueType.REFERENCES:  # each word a reference, checked together
        values = [" ".join(values)] if values else []
    if parameter.type is ValueType.PROFILE and not values:  # `--p` alone: the member's own profile
        return render_params.OWN_PROFILE
    if not values:
        example = (
            models[0] if parameter.type is ValueType.NAME and models and not parameter.choices else parameter.example
        )
        raise PromptError(f"`--{name}` needs a value, e.g. `--{name} {_show(example)}`.")
    value = values[0]
    if parameter.type is ValueType.NAME and models and not parameter.choices:
        for model in models:
            if model.lower() == value.lower():
                return model
        raise PromptError(f"Unknown model `{_show(value)}`: use {_listing(models)}.")
    try:
        return parameter.read(value, shown=f"`--{name} {_show(value)}`")
    except ParameterError as exc:
        raise PromptError(str(exc)) from None


# --- text --------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """Write `text` so that parsing gives it back: braces escaped, and backslashes that precede them."""
    out = []
    for i, char in enumerate(text):
        if char in "{}":
            out.append("\\" + char)
        elif char == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPABLE:
            out.append("\\\\")
        else:
            out.append(char)
    return "".join(out)


def _show(value: str, limit: int = 40) -> str:
    """A piece of what the member typed, safe inside a `code span` and short."""
    value = value.replace("`", "'")
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _listing(names: Sequence[str], limit: int = 100) -> str:
    """`a`, or one of `a`, `b`, `c` (+2 more): short enough for a one-line message."""
    shown = [f"`{_show(name, 30)}`" for name in names]
    if len(shown) == 1:
        return shown[0]
    kept = shown[:1]
    for item in shown[1:]:
        if len(", ".join([*kept, item])) > limit:
            break
        kept.append(item)
    more = f" (+{len(shown) - len(kept)} more)" if len(kept) < len(shown) else ""
    return f"one of {', '.join(kept)}{more}"


def _error(message: str, origin: str | None) -> PromptError:
    """`message`, saying where it came from when it was not typed in the prompt."""
    if origin:
        message = f"{message.removesuffix('.')} (from {origin})."
    return PromptError(message)
