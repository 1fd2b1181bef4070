"""Every kind of job in one table: what it draws from, what it makes, and how it is shown.

A job row names its kind (`jobs.kind`); everything that differs between kinds is read from the
`JobKind` registered here under that name. No other module compares a kind's name
(tests/test_kinds.py checks that). What adding a kind takes:

- A kind drawn by an engine action we have, started by a button under a picture: one
  `register(JobKind(...))` entry here, with a `tile_button` and a `picture_row` (and, for a new
  strength, its constant in `engine/params.py`). Its button then appears under every picture,
  its custom_id is matched after a restart, and its result, 🔄, /show, Remix and crash recovery
  follow from the entry. Retexture was added this way.
- A kind whose button first asks the member something (Zoom, Pan, Vary (Region)): also its button
  in the cog that owns it, registered for its kind in that cog's `install_views`, and what the
  member chose in `JobSpec.edit` (`bot/edits.py`).
- A kind that draws something new: also its engine action (`engine.requests.Action`, a module in
  `engine/actions/`, the action table in `engine/core.py`, and `engine/fake.py`).
"""

from __future__ import annotations

import enum
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from engine import params as render_params
from engine.requests import Action


class Source(enum.Enum):
    """What a kind draws from, besides its prompt."""

    NONE = "none"  # text only (a reroll reads its parent's prompt, not its pixels)
    PARENT_TILE = "parent tile"  # one tile of a finished parent job (jobs.parent_id, parent_index)
    UPLOADS = "uploads"  # images a member attached to the command


class Output(enum.Enum):
    """What a kind makes."""

    GRID = "grid"  # four images, shown as a 2x2 grid with U/V buttons
    SINGLE = "single"  # one image
    TEXT = "text"  # no image: words (e.g. prompts describing an upload)
    STYLE = "style"  # no image: a LoRA trained from a member's pictures, named by a style code (/tune)
    CLIP = "clip"  # a short video: its frames stored as one animated picture (bot.clip_files), played as MP4


class ResultButtons(enum.Enum):
    """The buttons under a finished job's message (`bot.ui.JobViews.result`)."""

    GRID = "grid"  # U1–U4 🔄 / V1–V4 ✉️ (bot.cogs.imagine)
    PROMPTS = "prompts"  # 1️⃣–4️⃣ 🔄 / Imagine all (bot.cogs.describe)
    PICTURE = "picture"  # under one image: every kind with a `picture_row`, then ✉️
    CLIP = "clip"  # under a clip: Extend (bot.cogs.animate)
    NONE = "none"


@dataclass(frozen=True, slots=True)
class TileButton:
    """A button under a single tile (after U1–U4) that starts this kind: `dg:{word}:{preset}:{job}:{n}`."""

    word: str  # in the custom_id; never change it, or buttons on old messages stop working
    label: str
    emoji: str
    preset_suffix: str = ""  # after each preset's name on its button: "Animate (Low motion)"


IMAGE_COUNTS = {Output.GRID: 4, Output.SINGLE: 1, Output.TEXT: 0, Output.STYLE: 0, Output.CLIP: 1}


@dataclass(frozen=True, slots=True, kw_only=True)
class JobKind:
    name: str  # stored in jobs.kind
    action: Action  # what the engine is asked to do
    label: str  # after the prompt on the job's messages, e.g. " - Variations"
    source: Source = Source.NONE
    output: Output = Output.GRID
    scale: int = 1  # output edge / requested tile edge (an upscale is 2)
    # Named img2img strengths (0 keeps the source, 1 ignores it); the first is the default.
    strengths: Mapping[str, float] = field(default_factory=lambda: MappingProxyType({}))
    min_steps: int = 2  # image-to-image: denoising steps it runs at least, whatever --quality says
    remix: bool = False  # whether Remix mode opens the prompt editor before this kind runs
    # Always opens the prompt editor first, Remix or not: a new prompt is what this kind is for (and
    # so is not a Remix a server can turn off).
    asks_prompt: bool = False
    buttons: ResultButtons = ResultButtons.NONE
    tile_button: TileButton | None = None
    # The row (0–4) of its button(s) under one picture (a U image, an upscale); None: not offered there.
    # With a `tile_button` that button is made for it; otherwise its cog registers its own (bot.ui.JobViews).
    picture_row: int | None = None
    # how the result's embed names the member's picture it drew from: "Picture", "yours"
    input_field: tuple[str, str] = ("Picture", "yours")
    rerolls_as: str = "reroll"  # the kind 🔄 under this kind's result starts (a picture's kinds keep the picture)
    # Redraws a --draft tile at the full steps and size its prompt asks for without --draft (Enhance).
    full_quality: bool = False
    # Extend: draws on from the last frame of its parent's clip, and its clip is the parent's and then its own.
    extends_clip: bool = False

    @property
    def image_count(self) -> int:
        return IMAGE_COUNTS[self.output]

    @property
    def default_strength(self) -> float | None:
        return next(iter(self.strengths.values()), None)

    def result_size(self, width: int, height: int) -> tuple[int, int]:
        """The pixel size of the finished result for tiles of `width`×`height` (a grid is 2x2 of them)."""
        across = 2 if self.output is Output.GRID else 1
        return width * self.scale * across, height * self.scale * across

    @property
    def makes_clip(self) -> bool:
        return self.output is Output.CLIP

    @property
    def steered_by_weight(self) -> bool:
        """An image prompt: how strongly the picture steers is the member's --iw, not a named strength."""
        return self.action is Action.IMAGE_PROMPT

    @property
    def edits_by_instruction(self) -> bool:
        """Its prompt is an instruction ("make it night") applied to a picture the model keeps as a
        reference: no strength, and only families that edit by instruction draw it."""
        return self.action is Action.EDIT

    @property
    def describes_missing_prompt(self) -> bool:
        """A member's picture redrawn with no prompt is described first, and drawn from its description:
        with an empty prompt the model draws whatever it likes, not the picture."""
        return self.source is Source.UPLOADS and self.action in (Action.VARIATION, Action.UPSCALE)

    @property
    def needs_finished_parent(self) -> bool:
        return self.source is Source.PARENT_TILE

    @property
    def keeps_parent_size(self) -> bool:
        """A remixed prompt keeps the source tile's size: the pixels it starts from have that shape
        (Enhance draws a draft's tile at its full size instead)."""
        return self.source is Source.PARENT_TILE and not self.full_quality

    @property
    def may_shrink_to_limit(self) -> bool:
        """Over a server's size limit, a picture drawn from text is made smaller; one from a source is refused."""
        return self.source is Source.NONE

    def seeds(self, seed: int | None = None) -> list[int]:
        """The job's seed (`--seed N`, or a random one) first, then tile seeds mixed from it.

        Jobs recorded before this rule (tile i used N + i) keep their stored seeds.
        """
        if seed is None:
            seed = secrets.randbelow(render_params.SEED_MAX + 1)
        return list(render_params.tile_seeds(seed, max(self.image_count, 1)))


KINDS: dict[str, JobKind] = {}


def register(kind: JobKind) -> JobKind:
    if kind.name in KINDS:
        raise ValueError(f"job kind {kind.name!r} is registered twice")
    if kind.tile_button is not None and any(
        k.tile_button and k.tile_button.word == kind.tile_button.word for k in KINDS.values()
    ):
        raise ValueError(f"tile button word {kind.tile_button.word!r} is used twice")
    KINDS[kind.name] = kind
    return kind


def get(name: str) -> JobKind:
    """The registered kind; a row written by a newer version of the bot names one we don't know."""
    try:
        return KINDS[name]
    except KeyError:
        raise LookupError(f"unknown job kind {name!r}") from None


def by_tile_word(word: str) -> JobKind | None:
    return next((k for k in KINDS.values() if k.tile_button and k.tile_button.word == word), None)


IMAGINE = register(
    JobKind(name="imagine", action=Action.IMAGINE, label="", buttons=ResultButtons.GRID),
)
REROLL = register(
    JobKind(name="reroll", action=Action.IMAGINE, label=" (reroll)", remix=True, buttons=ResultButtons.GRID),
)
VARIATION = register(
    JobKind(
        name="variation",
        action=Action.VARIATION,
        label=" - Variations",
        source=Source.PARENT_TILE,
        strengths=MappingProxyType({"strong": render_params.VARY_STRONG, "subtle": render_params.VARY_SUBTLE}),
        remix=True,
        buttons=ResultButtons.GRID,
        tile_button=TileButton(word="vary", label="Vary", emoji="🪄"),
        picture_row=0,
    )
)
# Vary (Region) sits beside Vary under a picture (bot.cogs.edit builds its button and cell menu).
REGION = register(
    JobKind(
        name="region",
        action=Action.INPAINT,
        label=" - Vary (Region)",
        source=Source.PARENT_TILE,
        strengths=MappingProxyType({"region": render_params.VARY_REGION}),
        remix=True,
        buttons=ResultButtons.GRID,
        picture_row=0,
    )
)
UPSCALE = register(
    JobKind(
        name="upscale",
        action=Action.UPSCALE,
        label=" - Upscaled",
        source=Source.PARENT_TILE,
        output=Output.SINGLE,
        scale=2,
        strengths=MappingProxyType(
            {"subtle": render_params.UPSCALE_SUBTLE, "creative": render_params.UPSCALE_CREATIVE}
        ),
        buttons=ResultButtons.PICTURE,
        min_steps=render_params.UPSCALE_MIN_STEPS,
        tile_button=TileButton(word="up", label="Upscale", emoji="🔍"),
        picture_row=0,  # only while twice the picture fits the server's size limit
    )
)

# Members' own pictures (bot.member_pictures): the source is our stored copy in the job's spec.inputs.
IMAGE_PROMPT = register(
    JobKind(
        name="image_prompt",
        action=Action.IMAGE_PROMPT,
        label="",
        source=Source.UPLOADS,
        remix=True,
        buttons=ResultButtons.GRID,
        rerolls_as="image_prompt",
    )
)
VARIATION_OF_PICTURE = register(
    JobKind(
        name="picture_variation",
        action=Action.VARIATION,
        label=" - Variations",
        source=Source.UPLOADS,
        strengths=VARIATION.strengths,
        remix=True,
        buttons=ResultButtons.GRID,
        rerolls_as="picture_variation",
    )
)
UPSCALE_OF_PICTURE = register(
    JobKind(
        name="picture_upscale",
        action=Action.UPSCALE,
        label=" - Upscaled",
        source=Source.UPLOADS,
        output=Output.SINGLE,
        scale=2,
        strengths=UPSCALE.strengths,
        buttons=ResultButtons.PICTURE,  # an upscaled picture carries the edit loop like any upscale
        min_steps=render_params.UPSCALE_MIN_STEPS,
    )
)
BLEND = register(
    JobKind(
        name="blend",
        action=Action.BLEND,
        label=" - Blend",
        source=Source.UPLOADS,
        strengths=MappingProxyType({"blend": render_params.BLEND_STRENGTH}),
        buttons=ResultButtons.GRID,
        rerolls_as="blend",
    )
)
DESCRIBE = register(
    JobKind(
        name="describe",
        action=Action.DESCRIBE,
        label=" - Describe",
        source=Source.UPLOADS,
        output=Output.TEXT,
        buttons=ResultButtons.PROMPTS,
    )
)
# /tune: a LoRA of a member's moodboard, trained in the background; its result is a style code.
TUNE = register(
    JobKind(name="tune", action=Action.TUNE, label=" - Tune", source=Source.UPLOADS, output=Output.STYLE),
)
RETEXTURE = register(
    JobKind(
        name="retexture",
        action=Action.VARIATION,
        label=" - Retexture",
        source=Source.PARENT_TILE,
        strengths=MappingProxyType({"retexture": render_params.RETEXTURE}),
        asks_prompt=True,  # the new prompt (a style, a material) is the point
        buttons=ResultButtons.GRID,
        tile_button=TileButton(word="retex", label="Retexture", emoji="🎨"),
        picture_row=3,
    )
)
# Under a --draft grid, a row of E1–E4 (bot.cogs.imagine): that tile at full quality.
ENHANCE = register(
    JobKind(
        name="enhance",
        action=Action.VARIATION,
        label=" - Enhanced",
        source=Source.PARENT_TILE,
        output=Output.SINGLE,
        strengths=MappingProxyType({"enhance": render_params.ENHANCE}),
        buttons=ResultButtons.PICTURE,
        full_quality=True,
    )
)
# Edit: a sentence changes the picture (Flux.1 Kontext, Flux.2 [klein]); other families refuse it
# with their reason before the instruction is even asked for.
EDIT = register(
    JobKind(
        name="edit",
        action=Action.EDIT,
        label=" - Edit",
        source=Source.PARENT_TILE,
        asks_prompt=True,  # the instruction
        buttons=ResultButtons.GRID,
        picture_row=3,
    )
)
EDIT_OF_PICTURE = register(
    JobKind(
        name="picture_edit",
        action=Action.EDIT,
        label=" - Edit",
        source=Source.UPLOADS,
        buttons=ResultButtons.GRID,
        rerolls_as="picture_edit",
    )
)
# --oref on a family with a reference-image input (Flux.1 Kontext, Flux.2 [klein]): the prompt drawn with
# the subject's picture as the pipeline's reference (`image=`), as an edit is; an IP-Adapter draws
# --oref as an IMAGE_PROMPT instead (bot.styles.object_route).
OBJECT_REFERENCE = register(
    JobKind(
        name="object_reference",
        action=Action.EDIT,
        label=" (--oref)",
        source=Source.UPLOADS,
        input_field=("Subject", "kept with `--oref` as the model's reference"),
        remix=True,
        buttons=ResultButtons.GRID,
        rerolls_as="object_reference",
    )
)
# Which kind works from a member's picture in place of a job's tile.
FOR_PICTURES = {
    VARIATION.name: VARIATION_OF_PICTURE,
    UPSCALE.name: UPSCALE_OF_PICTURE,
    EDIT.name: EDIT_OF_PICTURE,
}
# The edit loop (bot.cogs.edit owns their buttons; bot.edits what each records in JobSpec.edit; Vary
# (Region) is registered above, beside Vary).
# Outpainting redraws its new area from the kept picture's edge, re-noised to OUTPAINT_NEW_AREA (so it
# does not grow a copy of the kept object); the kept picture is pasted back.
_NEW_AREA = MappingProxyType({"new area": render_params.OUTPAINT_NEW_AREA})
ZOOM = register(
    JobKind(
        name="zoom",
        action=Action.OUTPAINT,
        label=" - Zoom Out",
        source=Source.PARENT_TILE,
        strengths=_NEW_AREA,
        remix=True,
        buttons=ResultButtons.GRID,
        picture_row=1,
    )
)
SQUARE = register(
    JobKind(
        name="make_square",
        action=Action.OUTPAINT,
        label=" - Make Square",
        source=Source.PARENT_TILE,
        strengths=_NEW_AREA,
        remix=True,
        buttons=ResultButtons.GRID,
        picture_row=1,
    )
)
PAN = register(
    JobKind(
        name="pan",
        action=Action.OUTPAINT,
        label=" - Pan",
        source=Source.PARENT_TILE,
        strengths=_NEW_AREA,
        remix=True,
        buttons=ResultButtons.GRID,
        picture_row=2,
    )
)
# Animate: a picture becomes a clip that starts on it, on the video model (VIDEO_MODEL, or the shipped
# motion model). Its strengths are --motion's: how far the frames may move from the picture.
_MOTION = MappingProxyType({"low": render_params.MOTION_LOW, "high": render_params.MOTION_HIGH})
ANIMATE = register(
    JobKind(
        name="animate",
        action=Action.ANIMATE,
        label=" - Animated",
        source=Source.PARENT_TILE,
        output=Output.CLIP,
        strengths=_MOTION,
        buttons=ResultButtons.CLIP,
        tile_button=TileButton(word="anim", label="Animate", emoji="🎬", preset_suffix=" motion"),
        picture_row=3,
        min_steps=render_params.ANIMATE_MIN_STEPS,
    )
)
ANIMATE_PICTURE = register(
    JobKind(
        name="picture_animate",
        action=Action.ANIMATE,
        label=" - Animated",
        source=Source.UPLOADS,
        output=Output.CLIP,
        strengths=_MOTION,
        buttons=ResultButtons.CLIP,
        min_steps=render_params.ANIMATE_MIN_STEPS,
    )
)
# Extend, under a clip (bot.cogs.animate): as many frames again, drawn on from its last frame.
EXTEND = register(
    JobKind(
        name="extend",
        action=Action.ANIMATE,
        label=" - Extended",
        source=Source.PARENT_TILE,
        output=Output.CLIP,
        strengths=_MOTION,
        buttons=ResultButtons.CLIP,
        extends_clip=True,
        min_steps=render_params.ANIMATE_MIN_STEPS,
    )
)
FOR_PICTURES[ANIMATE.name] = ANIMATE_PICTURE
