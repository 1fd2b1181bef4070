"""An engine with the real one's interface and no torch, for the bot's tests and load benchmarks.

Each tile is a flat colour derived from (prompt, seed) with the seed drawn on it, so the
same request gives the same pixels and different seeds give visibly different tiles. An outpaint
or inpaint keeps the pixels its mask keeps.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import struct
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from PIL import Image, ImageDraw

from engine import lora_files
from engine.requests import (
    Action,
    DescribeRequest,
    DescribeResult,
    Feature,
    ImagePromptMethod,
    ModelHints,
    ProgressCallback,
    RenderError,
    RenderLost,
    RenderProgress,
    RenderRequest,
    RenderResult,
    TuneRequest,
    TuneResult,
    refusal,
)

# The fake describer's phrasings; "{colour}" is the image's average colour, as #rrggbb.
FAKE_PHRASINGS = (
    "a flat {colour} picture",
    "a plain image in {colour}",
    "nothing but {colour}",
    "a canvas painted {colour}",
    "an even wash of {colour}",
    "a {colour} field",
    "one colour: {colour}",
    "a {colour} backdrop",
)


FAKE_FAMILIAR_COLOURS = 32  # the fake describer "knows" pictures of fewer colours than this


class FakeEngine:
    def __init__(
        self,
        *,
        models: Sequence[str] = ("fake",),
        step_delay_s: float = 0.0,
        fail_prompts: Sequence[str] = ("__fail__",),
        lose_prompts: Sequence[str] = ("__lost__",),
        hang_prompts: Sequence[str] = ("__hang__",),
        nsfw_prompts: Sequence[str] = ("__nsfw__",),
        tile_size: int = 64,
        image_prompt_method: ImagePromptMethod = ImagePromptMethod.IMAGE_TO_IMAGE,
        safety_checker: bool = True,
        refusals: Mapping[str, Mapping[Action | Feature, str]] | None = None,
        hints: Mapping[str, ModelHints] | None = None,
        lora_refusals: Mapping[str, str] | None = None,
        lora_context_dim: int | None = None,
    ) -> None:
        self.tile_size = tile_size
        self.safety_checker = safety_checker  # whether its models "have" one (it flags nsfw_prompts)
        self._image_prompt_method = image_prompt_method
        self._models = tuple(models)
        self.step_delay_s = step_delay_s
        self.fail_prompts = tuple(fail_prompts)
        self.lose_prompts = tuple(lose_prompts)  # as if the worker drawing them died mid-render
        self.hang_prompts = tuple(hang_prompts)
        self.nsfw_prompts = tuple(nsfw_prompts)  # with safety_check, every tile of these is flagged
        # model -> what it cannot do -> the sentence (as a model family would say it), for the bot's tests
        self.refusals = {model: dict(r) for model, r in (refusals or {}).items()}
        self.hints = dict(hints or {})
        # model -> why its "family" takes no LoRA; LoRA files are checked as a UNet model's would be,
        # against `lora_context_dim` when given
        self.lora_refusals = dict(lora_refusals or {})
        self.lora_context_dim = lora_context_dim
        self.requests: list[RenderRequest] = []  # every request received, in order
        self._gates: dict[str, asyncio.Event] = {}
        self.describe_requests: list[DescribeRequest] = []
        self.tune_requests: list[TuneRequest] = []
        self.tune_started_at: list[int] = []  # the step each tune began at (0, or where its checkpoint was)

    async def __aenter__(self) -> FakeEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    @property
    def models(self) -> Sequence[str]:
        return self._models

    @property
    def default_model(self) -> str:
        return self._models[0]

    def native_size(self, model: str | None = None) -> int:
        return self.tile_size

    def image_prompt_method(self, model: str | None = None) -> ImagePromptMethod:
        return self._image_prompt_method

    def has_safety_checker(self, model: str | None = None) -> bool:
        return self.safety_checker

    def supports(self, model: str | None, what: Action | Feature) -> str | None:
        return self.refusals.get(model or self.default_model, {}).get(what)

    def lora_refusal(self, model: str | None, path: str) -> str | None:
        reason = self.lora_refusals.get(model or self.default_model)
        if reason is not None:
            return reason
        try:
            info = lora_files.inspect(path)
        except lora_files.LoraFileError as e:
            return str(e)
        family = self.defaults(model).family or "fake"
        return lora_files.fit_reason(info, family=family, denoiser="unet", context_dim=self.lora_context_dim)

    def defaults(self, model: str | None = None) -> ModelHints:
        return self.hints.get(model or self.default_model, ModelHints())

    @property
    def loaded_models(self) -> Sequence[str]:
        return self._models

    async def alive(self) -> bool:
        return True

    def hold(self, prompt_part: str) -> asyncio.Event:
        """Renders whose prompt contains ``prompt_part`` wait, after their first step, until the
        returned event is set: a test decides when a job ends instead of racing a clock."""
        return self._gates.setdefault(prompt_part, asyncio.Event())

    async def render(self, request: RenderRequest, *, progress: ProgressCallback | None = None) -> RenderResult:
        self.requests.append(request)
        model = request.model or self.default_model
        if model not in self._models:
            raise RenderError(f"model {model!r} is not installed")
        reason = refusal(self, dataclasses.replace(request, model=model))
        if reason is not None:
            raise RenderError(reason)
        if request.action in (Action.VARIATION, Action.UPSCALE, Action.EDIT, Action.ANIMATE) and (
            request.init_image is None
        ):
            raise RenderError(f"{request.action} needs init_image, the source tile")
        if request.action is Action.IMAGE_PROMPT and request.image_prompt is None:
            raise RenderError("an image prompt needs image_prompt, the member's picture")
        started = time.perf_counter()
        total = max(1, request.steps * request.stop // 100)
        for step in range(1, total + 1):
            if any(p in request.prompt for p in self.hang_prompts):
                await asyncio.sleep(3600)
            await asyncio.sleep(self.step_delay_s)
            if progress is not None:
                preview = _tile(request, request.seeds[0], 24, 24) if request.preview else None
                progress(RenderProgress(step, total, preview))
            if step == 1:
                for part, gate in self._gates.items():
                    if part in request.prompt:
                        await gate.wait()
        if any(p in request.prompt for p in self.fail_prompts):
            raise RenderError("the fake engine was told to fail")
        if any(p in request.prompt for p in self.lose_prompts):
            raise RenderLost("the fake engine lost this render")
        if request.action is Action.ANIMATE:
            assert request.init_image is not None
            clip = _clip(request, request.init_image, request.frames or FAKE_CLIP_FRAMES)
            return RenderResult(
                images=(clip[0],),
                seeds=request.seeds,
                model=model,
                elapsed_s=time.perf_counter() - started,
                clips=(clip,),
                fps=FAKE_CLIP_FPS,
            )
        scale = 2 if request.action is Action.UPSCALE else 1
        images = tuple(_tile(request, seed, request.width * scale, request.height * scale) for seed in request.seeds)
        if request.mask_image is not None and request.init_image is not None:
            # Outpaint and inpaint keep what the mask keeps, as the real engine does.
            kept = request.init_image.convert("RGB")
            images = tuple(Image.composite(image, kept, request.mask_image.convert("L")) for image in images)
        flagged: tuple[bool, ...] = ()
        if request.safety_check and self.safety_checker:
            flagged = (any(p in request.prompt for p in self.nsfw_prompts),) * len(images)
        return RenderResult(
            images=images,
            seeds=request.seeds,
            model=model,
            elapsed_s=time.perf_counter() - started,
            flagged=flagged,
        )

    async def tune(self, request: TuneRequest, *, progress: ProgressCallback | None = None) -> TuneResult:
        """A LoRA file of the right shape (no training), after `steps` progress events, resuming from the
        step its checkpoint names; the checkpoint is written every 10 steps, as the real engine's every N."""
        self.tune_requests.append(request)
        started = time.perf_counter()
        step = _checkpoint_step(request.checkpoint)
        self.tune_started_at.append(step)
        while step < request.steps:
            await asyncio.sleep(self.step_delay_s)
            step += 1
            if step % 10 == 0:
                _save_checkpoint_step(request.checkpoint, step)
            if progress is not None:
                progress(RenderProgress(step, request.steps))
        write_fake_lora(request.output, self.lora_context_dim or 768)
        _save_checkpoint_step(request.checkpoint, None)
        return TuneResult(request.output, request.model or self.default_model, time.perf_counter() - started)

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        """Prompts naming the image's average colour: four fixed phrasings, or others for a seed. A
        picture of many colours (over FAKE_FAMILIAR_COLOURS in a 16 px copy) is unfamiliar."""
        self.describe_requests.append(request)
        await asyncio.sleep(self.step_delay_s)
        small = request.image.convert("RGB").resize((16, 16), Image.Resampling.NEAREST)
        if len(small.getcolors(maxcolors=256) or range(257)) > FAKE_FAMILIAR_COLOURS:
            return DescribeResult((), "fake", 0.0, unfamiliar=True)
        pixel = request.image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
        assert isinstance(pixel, tuple)  # an RGB image's pixel is (r, g, b)
        r, g, b = pixel
        colour = f"#{r:02x}{g:02x}{b:02x}"
        order = list(range(len(FAKE_PHRASINGS)))
        if request.seed is not None:
            order = order[4:] + order[:4]
            shift = request.seed % len(order)
            order = order[shift:] + order[:shift]
        prompts = [FAKE_PHRASINGS[i].format(colour=colour) for i in order]
        fresh = [p for p in prompts if p not in request.avoid] + [p for p in prompts if p in request.avoid]
        return DescribeResult(tuple(fresh[: request.count]), "fake", 0.0)


FAKE_CLIP_FRAMES = 8
FAKE_CLIP_FPS = 8.0


def _clip(request: RenderRequest, start: Image.Image, frames: int) -> tuple[Image.Image, ...]:
    """The picture, with a white block sliding left to right across it (ending on the end picture)."""
    start = start.convert("RGB").resize((request.width, request.height))
    side = max(2, request.width // 8)
    clip = []
    for i in range(frames):
        frame = start.copy()
        x = round((request.width - side) * i / max(1, frames - 1))
        ImageDraw.Draw(frame).rectangle((x, 0, x + side - 1, side - 1), fill=(255, 255, 255))
        clip.append(frame)
    if request.end_image is not None:
        clip[-1] = request.end_image.convert("RGB").resize(start.size)
    elif request.loop:
        clip[-1] = start
    return tuple(clip)


def _tile(request: RenderRequest, seed: int, width: int, height: int) -> Image.Image:
    loras = "".join(f"|{lora.name}:{lora.weight:g}" for lora in request.loras)  # a LoRA changes the picture
    digest = hashlib.sha256(f"{request.action}|{request.prompt}|{seed}{loras}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).text((2, 2), str(seed), fill=(255 - digest[0], 255 - digest[1], 255 - digest[2]))
    return image


def write_fake_lora(path: str, context_dim: int) -> None:
    """A LoRA file (zero weights, rank 1) whose header says a UNet with `context_dim`-wide text trained it."""
    name = "unet.down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k"
    shapes = {f"{name}.lora_A.weight": [1, context_dim], f"{name}.lora_B.weight": [context_dim, 1]}
    header, offset = {}, 0
    for tensor, shape in shapes.items():
        size = 4 * shape[0] * shape[1]
        header[tensor] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + size]}
        offset += size
    encoded = json.dumps(header).encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(struct.pack("<Q", len(encoded)) + encoded + bytes(offset))


def _checkpoint_step(path: str) -> int:
    checkpoint = Path(path)
    return int(checkpoint.read_text()) if checkpoint.exists() else 0


def _save_checkpoint_step(path: str, step: int | None) -> None:
    checkpoint = Path(path)
    if step is None:
        checkpoint.unlink(missing_ok=True)
        return
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    checkpoint.write_text(str(step))
