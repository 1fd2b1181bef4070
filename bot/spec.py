"""A job's recorded request, typed: what the engine draws, what the member typed, how it is delivered,
and, for Zoom, Make Square, Pan and Vary (Region), what the member chose to change.

Stored as JSON in `jobs.params`. Rows written before these types (one flat dict) still load:
`JobSpec.from_json` sorts a flat dict's keys into the three parts.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from PIL import Image

from engine import params as render_params
from engine.requests import Action, ImagePromptMethod, LoraWeight, RenderRequest

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

_T = TypeVar("_T", bound="DataclassInstance")


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderSpec:
    """Everything the engine needs to draw the job again, besides its kind, seeds, model and source."""

    prompt: str
    negative_prompt: str = ""
    width: int = 512  # of one tile; an upscale returns its kind's scale times this
    height: int = 512
    steps: int = 20
    guidance_scale: float = 7.5
    strength: float | None = None  # image-to-image: 0 keeps the source, 1 ignores it
    chaos: int = 0
    stop: int = 100
    tile: bool = False
    loop: bool = False  # Animate's --loop
    safety_check: bool = False
    image_weight: float | None = None  # an image prompt's --iw
    image_prompt_method: str | None = None  # an image prompt's or blend's ImagePromptMethod, as the engine said
    style_codes: tuple[int, ...] = ()  # --sref style codes (random ones as drawn: the same style again)
    style_weight: int = render_params.STYLE_WEIGHT_DEFAULT  # --sw
    # The LoRAs, each with the file the bot found for its name when the job was queued: 🔄, /show and
    # a redraw use the same files at the same weights.
    loras: tuple[LoraWeight, ...] = ()

    def request(
        self,
        *,
        action: Action,
        seeds: Sequence[int],
        model: str | None,
        init_image: Image.Image | None = None,
        pictures: Sequence[Image.Image] = (),
        mask_image: Image.Image | None = None,
        style_images: Sequence[Image.Image] = (),
        end_image: Image.Image | None = None,
    ) -> RenderRequest:
        """`init_image`: the picture the kind draws from (a tile, or a member's picture); `pictures`: all of them;
        `style_images`: the job's --sref pictures (`JobSpec.style_inputs`, loaded)."""
        image_prompt = action is Action.IMAGE_PROMPT  # the picture steers; it is not the starting point
        blend = action is Action.BLEND  # every picture is mixed in; none is the starting point
        return RenderRequest(
            action=action,
            seeds=tuple(seeds),
            model=model,
            init_image=None if image_prompt or blend else init_image,
            blend_images=tuple(pictures) if blend else (),
            image_prompt=init_image if image_prompt else None,
            image_weight=render_params.IMAGE_WEIGHT_DEFAULT if self.image_weight is None else self.image_weight,
            image_prompt_method=ImagePromptMethod(self.image_prompt_method) if self.image_prompt_method else None,
            mask_image=mask_image,
            preview=not self.safety_check,  # a preview would show what the checker has not seen
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            width=self.width,
            height=self.height,
            steps=self.steps,
            guidance_scale=self.guidance_scale,
            strength=self.strength,
            chaos=self.chaos,
            stop=self.stop,
            tile=self.tile,
            loop=self.loop,
            end_image=end_image,
            safety_check=self.safety_check,
            style_images=tuple(style_images),
            style_codes=tuple(self.style_codes),
            style_weight=self.style_weight,
            loras=self.loras,
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ShownValues:
    """Parameters as the member chose them, for showing; the engine reads RenderSpec instead."""

    aspect: str | None = None  # "3:2"
    quality: float | None = None
    stylize: int | None = None
    draft: bool = False  # --draft: the grid offers Enhance (full quality) per tile
    profile: str | None = None  # --p: the profile code drawn with (its pictures are in JobSpec.style_inputs)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeliveryOptions:
    upload_limit: int | None = None  # bytes the channel takes, from the interaction; None: Discord's default
    spoiler_flagged: bool = True  # post images the safety checker flagged as spoilers
    size_limit: int | None = None  # the server's longest side when admitted: Upscale is offered while 2x fits


@dataclass(frozen=True, slots=True, kw_only=True)
class EditSpec:
    """What an edit button chose (`bot.edits`): with the parent's picture, enough to make the same
    canvas and mask again. Zoom and Make Square set `zoom`/`aspect`, Pan `pan`, Vary (Region) `cells`."""

    zoom: float | None = None  # the picture becomes 1/zoom of the frame
    aspect: str | None = None  # a new frame shape ("16:9") at the same pixel count
    pan: str | None = None  # left, right, up, down
    pan_by: int = 0  # pixels the canvas grows that way
    cells: tuple[int, ...] = ()  # Vary (Region): the cells redrawn, numbered as engine.canvas.cell_boxes
    multiple: int = 8  # a new frame's sides are multiples of this: the model family's (Flux: 16)


@dataclass(frozen=True, slots=True, kw_only=True)
class InputImage:
    """A member's own picture a job draws from: our stored copy (`bot.member_pictures`), as CDN links expire."""

    path: str  # relative to DATA_DIR
    name: str  # the member's filename, shown on the result
    width: int  # after fitting to the model
    height: int


@dataclass(frozen=True, slots=True, kw_only=True)
class JobSpec:
    render: RenderSpec
    shown: ShownValues = field(default_factory=ShownValues)
    delivery: DeliveryOptions = field(default_factory=DeliveryOptions)
    inputs: tuple[InputImage, ...] = ()  # members' pictures, for kinds that draw from uploads
    style_inputs: tuple[InputImage, ...] = ()  # --sref pictures (uploads, job tiles, moodboards), our copies
    described: tuple[str, ...] = ()  # what a describe job found: its prompts, recorded when it finishes
    unfamiliar: bool = False  # a describe job's picture lay far outside what the describer knows: no prompts
    style_code: str = ""  # what a /tune job made: the code its LoRA is used by (`--lora CODE`)
    edit: EditSpec | None = None
    end: InputImage | None = None  # Animate: the picture the clip ends on (our stored copy)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> JobSpec:
        data: dict[str, Any] = json.loads(text)
        if "render" in data:
            parts = {part: data.get(part, {}) for part in ("render", "shown", "delivery")}
        else:  # a flat dict, as rows were stored before migration 0003
            parts = {part: data for part in ("render", "shown", "delivery")}
        edit = data.get("edit")
        render = dict(parts["render"])
        if "style_codes" in render:
            render["style_codes"] = tuple(render["style_codes"])
        render["loras"] = tuple(LoraWeight(**lora) for lora in render.get("loras", ()))
        return cls(
            render=_build(RenderSpec, render),
            shown=_build(ShownValues, parts["shown"]),
            delivery=_build(DeliveryOptions, parts["delivery"]),
            inputs=tuple(_build(InputImage, picture) for picture in data.get("inputs", ())),
            style_inputs=tuple(_build(InputImage, picture) for picture in data.get("style_inputs", ())),
            described=tuple(data.get("described", ())),
            unfamiliar=bool(data.get("unfamiliar", False)),
            style_code=data.get("style_code", ""),
            edit=_build(EditSpec, {**edit, "cells": tuple(edit.get("cells", ()))}) if edit else None,
            end=_build(InputImage, data["end"]) if data.get("end") else None,
        )

    def replace_render(self, **changes: Any) -> JobSpec:
        return dataclasses.replace(self, render=dataclasses.replace(self.render, **changes))


def _build(cls: type[_T], values: dict[str, Any]) -> _T:
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in values.items() if k in names})
