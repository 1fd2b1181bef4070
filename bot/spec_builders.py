"""The job specs a member's request makes: pure functions, no Discord.

Given what a member typed (a `ParsedPrompt`), their /settings defaults, the operator's settings
and the engine's facts about the model (native size, how it takes an image prompt), each builder
returns the `JobSpec` that is recorded and drawn, again and again, from the database. `bot.jobs`
and the cogs gather the inputs from Discord and SQLite and call these.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from bot import edits, kinds
from bot.kinds import JobKind, Source
from bot.prompt import ParsedPrompt
from bot.rows import Job
from bot.settings import Settings
from bot.spec import EditSpec, InputImage, JobSpec, RenderSpec, ShownValues
from engine import params as render_params
from engine.requests import Action, Engine, ImagePromptMethod


def imagine_spec(
    parsed: ParsedPrompt, *, settings: Settings, engine: Engine, model: str, defaults: dict[str, Any]
) -> JobSpec:
    """The recorded render request for a prompt: everything needed to render it again."""
    # The model's own defaults (MODEL_DEFAULTS: a turbo model runs 1–4 steps at guidance 0), then its
    # family's (Flux.1 [schnell]: 4 steps, no guidance), before the bot's.
    # The member's /settings fill in what the prompt leaves out; the prompt wins.
    aspect = parsed.aspect or _aspect(defaults.get("aspect"))
    quality = parsed.quality if parsed.quality is not None else defaults.get("quality", render_params.QUALITY_DEFAULT)
    stylize = parsed.stylize if parsed.stylize is not None else defaults.get("stylize", render_params.STYLIZE_DEFAULT)
    values = {**parsed.parameter_values(), "ar": aspect, "quality": quality, "stylize": stylize}
    hints = engine.defaults(model)  # the model family's own steps, guidance and size multiple
    fields = render_params.request_fields(
        values,
        native=settings.defaults_for(model).size or engine.native_size(model),
        base_steps=settings.base_steps(model, hints),
        base_guidance=settings.base_guidance(model, hints),
        max_steps=settings.max_steps,
        size_multiple=hints.size_multiple,
    )
    codes = tuple(int(ref) for ref in parsed.style_refs if ref.isdigit())  # the others, bot.styles resolves
    weight = render_params.STYLE_WEIGHT_DEFAULT if parsed.style_weight is None else parsed.style_weight
    return JobSpec(
        render=RenderSpec(prompt=parsed.text, **fields, style_codes=codes, style_weight=weight),
        shown=ShownValues(
            aspect=f"{aspect[0]}:{aspect[1]}",
            quality=quality,
            stylize=stylize,
            draft=parsed.draft,
            profile=parsed.profile,
        ),
    )


def image_prompt_spec(
    parsed: ParsedPrompt,
    picture: InputImage,
    *,
    settings: Settings,
    engine: Engine,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """An /imagine steered by a member's picture: its shape follows the picture unless `--ar` says otherwise."""
    if parsed.aspect is None:
        ratio = Fraction(picture.width, picture.height).limit_denominator(64)
        parsed = dataclasses.replace(parsed, aspect=(ratio.numerator, ratio.denominator))
    spec = imagine_spec(parsed, settings=settings, engine=engine, model=model, defaults=defaults)
    weight = render_params.IMAGE_WEIGHT_DEFAULT if parsed.image_weight is None else parsed.image_weight
    method = engine.image_prompt_method(model)
    steps = spec.render.steps
    if method is ImagePromptMethod.IMAGE_TO_IMAGE:
        steps = render_params.img2img_steps(steps, render_params.image_prompt_strength(weight))
    spec = spec.replace_render(steps=steps, image_weight=weight, image_prompt_method=method.value)
    return dataclasses.replace(spec, inputs=(picture,))


def object_reference_spec(
    parsed: ParsedPrompt,
    picture: InputImage,
    *,
    settings: Settings,
    engine: Engine,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """An /imagine that keeps the subject of `picture` (`--oref`), drawn with it as the family's
    reference image: the picture's shape unless `--ar` says otherwise."""
    if parsed.aspect is None:
        ratio = Fraction(picture.width, picture.height).limit_denominator(64)
        parsed = dataclasses.replace(parsed, aspect=(ratio.numerator, ratio.denominator))
    spec = imagine_spec(parsed, settings=settings, engine=engine, model=model, defaults=defaults)
    return dataclasses.replace(spec, inputs=(picture,))


def blend_spec(
    parsed: ParsedPrompt,
    pictures: Sequence[InputImage],
    *,
    aspect: tuple[int, int],
    settings: Settings,
    engine: Engine,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """A /blend: the chosen dimensions (a prompt's `--ar` wins), mixed by the engine's way for `model`."""
    if parsed.aspect is None:
        parsed = dataclasses.replace(parsed, aspect=aspect)
    spec = imagine_spec(parsed, settings=settings, engine=engine, model=model, defaults=defaults)
    method = engine.image_prompt_method(model)
    steps = spec.render.steps
    strength = render_params.BLEND_STRENGTH
    if method is ImagePromptMethod.IMAGE_TO_IMAGE:
        steps = render_params.img2img_steps(steps, strength)
    spec = spec.replace_render(steps=steps, strength=strength, image_prompt_method=method.value)
    return dataclasses.replace(spec, inputs=tuple(pictures))


def picture_spec(
    parsed: ParsedPrompt,
    picture: InputImage,
    *,
    strength: float,
    settings: Settings,
    engine: Engine,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """A variation or upscale of a member's picture: the picture's size, the prompt's other parameters."""
    spec = imagine_spec(parsed, settings=settings, engine=engine, model=model, defaults=defaults)
    steps = render_params.img2img_steps(spec.render.steps, strength)
    spec = spec.replace_render(width=picture.width, height=picture.height, steps=steps, strength=strength)
    return dataclasses.replace(spec, shown=dataclasses.replace(spec.shown, aspect=None), inputs=(picture,))


def instruction_spec(
    parsed: ParsedPrompt,
    picture: InputImage,
    *,
    settings: Settings,
    engine: Engine,
    model: str,
    defaults: dict[str, Any],
) -> JobSpec:
    """An edit of a member's picture by instruction: the picture's size (in the family's multiples),
    the instruction as the prompt, the picture as the reference."""
    spec = imagine_spec(parsed, settings=settings, engine=engine, model=model, defaults=defaults)
    multiple = engine.defaults(model).size_multiple
    width, height = (max(multiple, side - side % multiple) for side in (picture.width, picture.height))
    spec = spec.replace_render(width=width, height=height)
    return dataclasses.replace(spec, shown=dataclasses.replace(spec.shown, aspect=None), inputs=(picture,))


def _aspect(value: Any) -> tuple[int, int]:
    """A default aspect as /settings and /config store it ("3:2"), or a pair."""
    if isinstance(value, str):
        width, _, height = value.partition(":")
        return int(width), int(height)
    return tuple(value) if value else (1, 1)  # type: ignore[return-value]


def child_spec(
    parent: Job,
    kind: JobKind,
    *,
    source_size: tuple[int, int] | None,
    strength: float | None,
    remix: ParsedPrompt | None,
    edit: EditSpec | None,
    model: str,
    defaults: dict[str, Any],
    settings: Settings,
    engine: Engine,
    style_inputs: tuple[InputImage, ...] | None = None,
) -> tuple[JobSpec, str, str]:
    """What a click on `parent` draws: (spec, prompt text, model) of a `kind` job from its image.

    `source_size`: the parent image's size, for kinds drawn from one of its tiles; `remix`: a
    Remix edit of the parent's prompt, parsed; `edit`: what a Zoom, Make Square, Pan or Vary
    (Region) button chose; `defaults`: the clicking member's /settings; `style_inputs`: the --sref
    pictures the child draws with, when not the parent's (those a Remix named).
    """
    if strength is None and kinds.get(parent.kind) is kind:  # 🔄 on a variation of a picture: as strong again
        strength = parent.spec.render.strength
    # A variation of a zoomed picture is no zoom; a clip drawn from a clip ends where it is told to.
    spec = dataclasses.replace(parent.spec, edit=None, end=None)
    if source_size is not None:
        spec = spec.replace_render(width=source_size[0], height=source_size[1])
    text = parent.prompt
    if remix is not None:
        # A remixed prompt is drawn like a new one; a kind drawn from a tile keeps the tile's size.
        model = remix.model or model
        facts: dict[str, Any] = {"settings": settings, "engine": engine, "model": model, "defaults": defaults}
        fresh = imagine_spec(remix, **facts)
        if kind.steered_by_weight:  # a remixed image prompt keeps its picture
            fresh = image_prompt_spec(remix, spec.inputs[0], **facts)
        elif kind.edits_by_instruction and kind.source is Source.UPLOADS:  # a new instruction, the same picture
            fresh = instruction_spec(remix, spec.inputs[0], **facts)
        elif kind.source is Source.UPLOADS:  # and a remixed variation of a picture its picture and size
            assert strength is not None  # a picture's kinds redraw it at a named strength
            fresh = picture_spec(remix, spec.inputs[0], strength=strength, **facts)
        if kind.keeps_parent_size:
            fresh = dataclasses.replace(
                fresh.replace_render(width=spec.render.width, height=spec.render.height),
                shown=dataclasses.replace(fresh.shown, aspect=spec.shown.aspect),
            )
        spec, text = fresh, remix.raw
    kept = parent.spec.style_inputs if style_inputs is None else style_inputs
    spec = dataclasses.replace(spec, style_inputs=kept)
    if kind.source is not Source.UPLOADS:  # drawn from the parent's tile, or from text: not its picture
        spec = dataclasses.replace(spec, inputs=()).replace_render(image_weight=None, image_prompt_method=None)
    if kind.action is Action.OUTPAINT:  # a model may re-noise its new area less (or more) than the kinds' own
        strength = settings.new_area_strength(model, engine.defaults(model)) or strength
    steps = spec.render.steps
    if strength is not None:
        steps = render_params.img2img_steps(steps, strength, minimum=kind.min_steps)
    spec = spec.replace_render(steps=steps, strength=strength)
    if edit is not None:
        width, height = edits.result_size(edit, spec.render.width, spec.render.height)
        # An edit finishes a picture on a new canvas: --stop and --tile do not apply to it.
        spec = dataclasses.replace(spec, edit=edit).replace_render(
            width=width, height=height, stop=render_params.STOP_DEFAULT, tile=False
        )
    return spec, text, model
