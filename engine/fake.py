"""An engine with the real one's interface and no torch, for the bot's tests and load benchmarks.

Each tile is a flat colour derived from (prompt, seed) with the seed drawn on it, so the
same request gives the same pixels and different seeds give visibly different tiles.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence

from PIL import Image, ImageDraw

from engine.requests import (
    Action,
    ImagePromptMethod,
    ProgressCallback,
    RenderError,
    RenderLost,
    RenderProgress,
    RenderRequest,
    RenderResult,
)


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
    ) -> None:
        self.tile_size = tile_size
        self._image_prompt_method = image_prompt_method
        self._models = tuple(models)
        self.step_delay_s = step_delay_s
        self.fail_prompts = tuple(fail_prompts)
        self.lose_prompts = tuple(lose_prompts)  # as if the worker drawing them died mid-render
        self.hang_prompts = tuple(hang_prompts)
        self.nsfw_prompts = tuple(nsfw_prompts)  # with safety_check, every tile of these is flagged
        self.requests: list[RenderRequest] = []  # every request received, in order

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

    @property
    def loaded_models(self) -> Sequence[str]:
        return self._models

    async def alive(self) -> bool:
        return True

    async def render(self, request: RenderRequest, *, progress: ProgressCallback | None = None) -> RenderResult:
        self.requests.append(request)
        model = request.model or self.default_model
        if model not in self._models:
            raise RenderError(f"model {model!r} is not installed")
        if request.action in (Action.VARIATION, Action.UPSCALE) and request.init_image is None:
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
        if any(p in request.prompt for p in self.fail_prompts):
            raise RenderError("the fake engine was told to fail")
        if any(p in request.prompt for p in self.lose_prompts):
            raise RenderLost("the fake engine lost this render")
        scale = 2 if request.action is Action.UPSCALE else 1
        images = tuple(_tile(request, seed, request.width * scale, request.height * scale) for seed in request.seeds)
        flagged = ()
        if request.safety_check:
            flagged = (any(p in request.prompt for p in self.nsfw_prompts),) * len(images)
        return RenderResult(
            images=images, seeds=request.seeds, model=model, elapsed_s=time.perf_counter() - started, flagged=flagged
        )


def _tile(request: RenderRequest, seed: int, width: int, height: int) -> Image.Image:
    digest = hashlib.sha256(f"{request.action}|{request.prompt}|{seed}".encode()).digest()
    image = Image.new("RGB", (width, height), tuple(digest[:3]))
    ImageDraw.Draw(image).text((2, 2), str(seed), fill=(255 - digest[0], 255 - digest[1], 255 - digest[2]))
    return image
