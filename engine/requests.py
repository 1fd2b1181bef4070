"""The seam between the bot and the engine: plain dataclasses, no torch.

The bot builds a `RenderRequest`, awaits `Engine.render()` (`engine.core.DiffusersEngine`,
`engine.ray_engine.RayEngine` across GPUs and hosts, or `engine.fake.FakeEngine` in tests), and
receives `RenderProgress` events and a `RenderResult`.
Images cross the seam as Pillow images. Cancelling the awaiting task cancels the render (it
stops at the next denoising step).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Protocol

from PIL import Image


class Action(enum.StrEnum):
    IMAGINE = "imagine"  # text -> four tiles (a reroll is an imagine with new seeds)
    VARIATION = "variation"  # one tile -> four new tiles (image-to-image)
    UPSCALE = "upscale"  # one tile -> one image twice the size
    OUTPAINT = "outpaint"  # a picture on a larger canvas -> the new area drawn (Zoom Out, Pan, Make Square)
    INPAINT = "inpaint"  # a picture and a mask -> the masked region redrawn (Vary (Region))
    BLEND = "blend"  # two to five images -> four tiles that mix them
    DESCRIBE = "describe"  # one image -> four prompts, through Engine.describe (no render)
    IMAGE_PROMPT = "image_prompt"  # text + a member's picture -> four tiles steered by the picture
    EDIT = "edit"  # a picture + an instruction ("make it night") -> four edits of it (Kontext, Flux.2)
    TUNE = "tune"  # 5-30 pictures -> a LoRA of their style, through Engine.tune (no render)
    ANIMATE = "animate"  # a picture (and an end picture) -> a clip, on the video model (`RenderResult.clips`)


class Feature(enum.StrEnum):
    """What a request may use beyond its action; a model family may lack some (`Engine.supports`)."""

    NEGATIVE_PROMPT = "negative prompt (--no)"
    TILE = "--tile"
    STOP = "--stop"
    CHAOS = "--chaos"
    MULTI_PROMPT = "`::` multi-prompt weights"
    INSTRUCTION_EDIT = "instruction edit"  # an image changed by a sentence: what Action.EDIT needs of a family
    STYLE_REFERENCE = "--sref"  # a style drawn from reference pictures or style codes
    END_FRAME = "--end"  # a clip that ends on a given picture (--end, and --loop: it ends where it began)


class ImagePromptMethod(enum.StrEnum):
    """How a picture steers an image prompt; the result's embed says which ran."""

    IP_ADAPTER = "IP-Adapter"  # the picture's CLIP embedding conditions the UNet (needs IP_ADAPTER)
    IMAGE_TO_IMAGE = "image-to-image"  # the picture, noised by --iw, is the starting point


@dataclass(frozen=True, slots=True)
class LoraWeight:
    """One LoRA a request draws with: its name (as members wrote it), its file and its weight.

    The bot resolves the name to the file (an operator's LORAS entry, or a member's own from /tune)
    before queueing; `path` is "" until then.
    """

    name: str
    path: str
    weight: float = 1.0


# Field metadata: each request in a shared pipeline call keeps its own value of this field. Every
# other field must be equal for requests to share a call (`RenderRequest.batch_key`), so a new
# field is batch-safe by default: it splits batches until someone marks it as a request's own.
OWN = MappingProxyType({"own": True})


@dataclass(frozen=True, slots=True, kw_only=True)
class RenderRequest:
    action: Action
    prompt: str = field(metadata=OWN)
    seeds: tuple[int, ...] = field(metadata=OWN)  # one per output image
    width: int = 512  # of one tile; an upscale returns 2x this
    height: int = 512
    steps: int = 20
    guidance_scale: float = 7.5
    negative_prompt: str = field(default="", metadata=OWN)
    model: str | None = field(default=None, metadata=OWN)  # None: the engine's default model (keyed resolved)
    # variation/upscale/edit source
    init_image: Image.Image | None = field(default=None, compare=False, metadata=OWN)
    # outpaint/inpaint: white is drawn
    mask_image: Image.Image | None = field(default=None, compare=False, metadata=OWN)
    # blend: 2-5 sources, any size
    blend_images: tuple[Image.Image, ...] = field(default=(), compare=False, metadata=OWN)
    strength: float | None = None  # variation/upscale/blend/inpaint: 0 keeps the source, 1 ignores it
    chaos: int = field(default=0, metadata=OWN)  # 0-100: how far the four tiles spread apart (per tile's seed)
    stop: int = 100  # 10-100: percent of the steps to run before finishing
    tile: bool = False  # seamless tiling
    preview: bool = field(default=False, metadata=OWN)  # attach a cheap preview image to progress events
    # run the model's safety checker; results say which images it flagged
    safety_check: bool = field(default=False, metadata=OWN)
    # IMAGE_PROMPT: the member's picture
    image_prompt: Image.Image | None = field(default=None, compare=False, metadata=OWN)
    image_weight: float = 1.0  # IMAGE_PROMPT: --iw, 0-3
    image_prompt_method: ImagePromptMethod | None = None  # IMAGE_PROMPT, BLEND: as Engine.image_prompt_method said
    # ANIMATE: init_image is the first frame; `strength` how much it moves (--motion); 0 frames: the
    # video model's own clip length
    frames: int = 0
    loop: bool = False  # ANIMATE: the clip ends on its first frame, so it plays round seamlessly
    end_image: Image.Image | None = field(default=None, compare=False, metadata=OWN)  # ANIMATE: --end's picture
    # --sref: pictures whose style (colour and contrast statistics, never layout) the tiles take on,
    # and style codes (engine.style.palette), at --sw strength (0-1000)
    style_images: tuple[Image.Image, ...] = field(default=(), compare=False, metadata=OWN)
    style_codes: tuple[int, ...] = field(default=(), metadata=OWN)
    style_weight: int = field(default=100, metadata=OWN)

    @property
    def styled(self) -> bool:
        """Whether the request has a style reference (pictures or codes)."""
        return bool(self.style_images or self.style_codes)

    # LoRAs on the denoiser (and text encoder), with their weights. Not a request's own: only requests
    # with the same adapters at the same weights share a pipeline call.
    loras: tuple[LoraWeight, ...] = ()

    def batch_key(self, model: str) -> tuple[object, ...]:
        """Requests with equal keys can share one pipeline call (`model`: the one resolved for this request)."""
        return (model, *(getattr(self, f.name) for f in fields(self) if not f.metadata.get("own")))


@dataclass(frozen=True, slots=True, kw_only=True)
class TuneRequest:
    """/tune: a LoRA trained on a model from a member's moodboard, written to `output` (a .safetensors file).

    `checkpoint` is where the run saves its state as it goes, and resumes from when it is there (after
    a restart, the same request continues where it stopped).
    """

    pictures: tuple[Image.Image, ...] = field(compare=False)
    output: str
    checkpoint: str
    model: str | None = None
    steps: int = 300
    seed: int = 0


@dataclass(frozen=True, slots=True)
class TuneResult:
    output: str
    model: str
    elapsed_s: float


@dataclass(frozen=True, slots=True)
class RenderProgress:
    step: int
    total: int
    preview: Image.Image | None = None  # the current grid, approximated from the latents

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 0.0


@dataclass(frozen=True, slots=True)
class RenderResult:
    images: tuple[Image.Image, ...]  # one per seed
    seeds: tuple[int, ...]
    model: str
    elapsed_s: float  # device time spent on this request: its share of a batch's, by images
    flagged: tuple[bool, ...] = ()  # per image, when safety_check was asked for; () when it was not
    batch_size: int = 1  # requests that shared the pipeline call that drew this one
    # ANIMATE: one clip per seed, its frames in order (`images` holds each clip's first frame), at `fps`
    clips: tuple[tuple[Image.Image, ...], ...] = ()
    fps: float = 0.0

    @property
    def grid(self) -> Image.Image:
        """The images as a 2x2 grid (or a single image unchanged)."""
        from engine.grid import compose_grid

        return compose_grid(self.images)


@dataclass(frozen=True, slots=True, kw_only=True)
class DescribeRequest:
    """/describe: candidate prompts for an image."""

    image: Image.Image = field(compare=False)
    count: int = 4
    seed: int | None = None  # None: the most likely prompts, always the same; a seed: other phrasings
    avoid: tuple[str, ...] = ()  # prompts already shown, left out where the describer has others


@dataclass(frozen=True, slots=True)
class DescribeResult:
    prompts: tuple[str, ...]  # distinct, most likely first; a describer may find fewer than asked
    describer: str
    elapsed_s: float
    # The picture lies far outside what the describer knows: no prompts, rather than a confident wrong one.
    unfamiliar: bool = False


@dataclass(frozen=True, slots=True)
class ModelHints:
    """A model family's own defaults; None: the bot's (STEPS, GUIDANCE_SCALE). MODEL_DEFAULTS overrides both."""

    family: str = ""  # e.g. "Flux.1", "Stable Diffusion XL"
    steps: int | None = None
    guidance_scale: float | None = None
    size_multiple: int = 8  # tile sides must be multiples of this (Flux packs 2x2 latents: 16)
    # how far Zoom Out, Make Square and Pan re-noise the new area; None: OUTPAINT_NEW_AREA
    new_area_strength: float | None = None


class RenderError(Exception):
    """A render failed for a reason the requester can be told (out of memory, bad input)."""


class RenderLost(RenderError):
    """The render was lost with the worker drawing it (a Ray replica died, the cluster went away).

    Nothing was wrong with the request: running it again may well succeed, so the scheduler
    queues it again (within MAX_ATTEMPTS) instead of failing it.
    """


ProgressCallback = Callable[[RenderProgress], None]


def features_of(request: RenderRequest) -> tuple[Feature, ...]:
    """The features `request` uses, for `Engine.supports`."""
    used = []
    if request.negative_prompt.strip():
        used.append(Feature.NEGATIVE_PROMPT)
    if request.tile:
        used.append(Feature.TILE)
    if request.stop != 100:
        used.append(Feature.STOP)
    if request.chaos:
        used.append(Feature.CHAOS)
    if request.styled:
        used.append(Feature.STYLE_REFERENCE)
    from engine.params import is_multi_prompt  # engine.params imports this module (LoraWeight)

    if is_multi_prompt(request.prompt):
        used.append(Feature.MULTI_PROMPT)
    if request.action is Action.ANIMATE and (request.end_image is not None or request.loop):
        used.append(Feature.END_FRAME)
    return tuple(used)


def refusal(engine: Engine, request: RenderRequest) -> str | None:
    """Why `engine` cannot draw `request` on its model (a sentence for the member), or None.

    Pure and cheap: the bot asks it before queueing, so a request no family can draw is never queued.
    """
    asked: tuple[Action | Feature, ...] = (request.action, *features_of(request))
    for what in asked:
        reason = engine.supports(request.model, what)
        if reason is not None:
            return reason
    for lora in request.loras:
        reason = engine.lora_refusal(request.model, lora.path) if lora.path else "it is not installed"
        if reason is not None:
            return f"The LoRA `{lora.name}` can't be used here: {reason}"
    hints = engine.defaults(request.model)
    multiple = hints.size_multiple
    if request.width % multiple or request.height % multiple:  # e.g. a Make Square or Custom Zoom canvas
        return (
            f"{hints.family or 'This'} models draw sizes in multiples of {multiple} px, and this would be "
            f"{request.width}×{request.height}: try another --ar or zoom"
        )
    return None


class Engine(Protocol):
    """What the bot needs from an engine; `engine.Engine` and `engine.fake.FakeEngine` provide it."""

    @property
    def models(self) -> Sequence[str]: ...

    @property
    def default_model(self) -> str: ...

    def native_size(self, model: str | None = None) -> int:
        """The tile edge (pixels) the model was trained at; aspect ratios keep this area."""
        ...

    def image_prompt_method(self, model: str | None = None) -> ImagePromptMethod:
        """How an image prompt on `model` is rendered: with the operator's IP-Adapter, or image-to-image."""
        ...

    def has_safety_checker(self, model: str | None = None) -> bool:
        """Whether `safety_check` on a request for this model checks anything."""
        ...

    def supports(self, model: str | None, what: Action | Feature) -> str | None:
        """None when `model` can do `what`; else one sentence naming the model's family and the reason.

        Answered from config files, never by loading weights: the bot asks before it queues.
        """
        ...

    def lora_refusal(self, model: str | None, path: str) -> str | None:
        """None when the LoRA file at `path` fits `model`; else why not (the family takes no LoRA, it was
        trained for another family, it is no LoRA file), as a clause for the member.

        Read from the file's header and the model's config, never by loading weights: the bot asks
        before it queues.
        """
        ...

    def defaults(self, model: str | None = None) -> ModelHints:
        """The steps and guidance `model` is meant to run at (a few-step model: 4 steps, no guidance)."""
        ...

    @property
    def loaded_models(self) -> Sequence[str]:
        """The models in memory now (on any replica), least recently used first."""
        ...

    async def alive(self) -> bool:
        """Whether the engine can take a render now (for /healthz)."""
        ...

    async def render(self, request: RenderRequest, *, progress: ProgressCallback | None = None) -> RenderResult:
        """Render `request`; `progress` is called on the event loop's thread.

        Raises `RenderError` for a request that cannot be drawn, `RenderLost` when the worker
        drawing it went away (worth retrying).
        """
        ...

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        """Candidate prompts for `request.image`, from the image-to-text model, off the event loop."""
        ...

    async def tune(self, request: TuneRequest, *, progress: ProgressCallback | None = None) -> TuneResult:
        """Train a LoRA (`/tune`), off the event loop; cancelling the awaiting task stops it at the next step
        (its checkpoint stays). Raises `RenderError` for a model that cannot be tuned."""
        ...
