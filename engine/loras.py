"""LoRAs on a loaded pipeline: which adapters are in it, which are active, at what weights.

diffusers does the work (`load_lora_weights(..., adapter_name=)`, `set_adapters`, `disable_lora`,
`delete_adapters`; PEFT underneath). A batch's LoRAs are set before its pipeline call, so switching
between batches never reloads the model: each LoRA file is loaded once as its own adapter and kept
(the least recently used is deleted past `capacity`), and switching is `set_adapters`, which changes
no weights.

With `COMPILE` on, LoRAs are refused before queueing (`DiffusersEngine.no_lora`): each set of
adapters is another graph per tile size, and a fullgraph compile past torch's recompile limit fails
outright. diffusers' `enable_lora_hotswap` would keep one graph, but it needs the first LoRA loaded
before compiling, and hotswapped adapters of another rank drew 4x too strongly here (PEFT 0.21,
diffusers 0.42, measured on the tiny model), so it is not used yet.

Every pipeline made `from_pipe` shares the UNet and text encoder, so the adapters set here apply to
image-to-image and inpainting too.
"""

from __future__ import annotations

import collections
import hashlib
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any

from engine.requests import LoraWeight, RenderError

log = logging.getLogger(__name__)
# diffusers warns at every load of a UNet-only LoRA (most are) that it has no text-encoder keys.
logging.getLogger("diffusers.loaders.lora_base").setLevel(logging.ERROR)
# PEFT warns when a second adapter joins a model: keeping several is the point here.
warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*", category=UserWarning)

DEFAULT_CAPACITY = 8  # adapters kept loaded per model


def file_key(path: str) -> str:
    """A file's identity: its path and modification time (a LoRA retrained in place is loaded again)."""
    try:
        stamp = os.stat(path).st_mtime_ns
    except OSError:
        stamp = 0
    return f"{os.path.abspath(path)}@{stamp}"


def adapter_name(path: str) -> str:
    """A PEFT adapter name for a file: a module-name-safe digest of its identity."""
    return "lora_" + hashlib.sha1(file_key(path).encode()).hexdigest()[:16]


class LoraSet:
    """The adapters of one model's pipeline (`pipe`: its text-to-image pipeline)."""

    def __init__(self, pipe: Any, *, capacity: int = DEFAULT_CAPACITY) -> None:
        self.pipe = pipe
        self._unfused = False
        self.capacity = capacity
        self._loaded: collections.OrderedDict[str, str] = collections.OrderedDict()  # adapter -> file key
        self._active: tuple[tuple[str, float], ...] = ()
        self._enabled = True
        self.loads = 0  # LoRA files read, for tests and benchmarks

    @property
    def loaded(self) -> tuple[str, ...]:
        return tuple(self._loaded)

    def apply(self, loras: Sequence[LoraWeight]) -> None:
        """Make exactly `loras` active at their weights (none: the plain model)."""
        if not loras:
            if self._loaded and self._enabled:
                self.pipe.disable_lora()
                self._enabled = False
            self._active = ()
            return
        self._unfuse()
        names = [self._adapter(lora) for lora in loras]
        wanted = tuple(zip(names, (lora.weight for lora in loras), strict=True))
        if not self._enabled:
            self.pipe.enable_lora()
            self._enabled = True
        if wanted != self._active:
            self.pipe.set_adapters(list(names), [weight for _, weight in wanted])
            self._active = wanted

    def _unfuse(self) -> None:
        """Fused QKV (engine/optimize.py) computes attention from one `to_qkv` matrix, past the
        `to_q`/`to_k`/`to_v` layers a LoRA adapts: the first LoRA on a model unfuses them for good."""
        if self._unfused:
            return
        self._unfused = True
        for module in (getattr(self.pipe, "unet", None), getattr(self.pipe, "text_encoder", None)):
            if module is not None and getattr(module, "original_attn_processors", None) is not None:
                module.unfuse_qkv_projections()
                log.info("unfused QKV projections of %s for LoRAs", type(module).__name__)

    def _adapter(self, lora: LoraWeight) -> str:
        name = adapter_name(lora.path)
        if name in self._loaded:
            self._loaded.move_to_end(name)
            return name
        while len(self._loaded) >= self.capacity:
            oldest, _ = self._loaded.popitem(last=False)
            self.pipe.delete_adapters([oldest])
            self._active = ()
        self._load(lora, name)
        self._loaded[name] = file_key(lora.path)
        return name

    def _load(self, lora: LoraWeight, adapter: str) -> None:
        try:
            self.pipe.load_lora_weights(lora.path, adapter_name=adapter)
        except (ValueError, RuntimeError) as e:
            log.warning("could not load LoRA %s from %s: %s", lora.name, lora.path, e)
            raise RenderError(f"the LoRA `{lora.name}` could not be loaded; the bot's operator has been told") from e
        except OSError as e:
            log.warning("could not read LoRA %s from %s: %s", lora.name, lora.path, e)
            raise RenderError(f"the LoRA `{lora.name}` is no longer there; the bot's operator has been told") from e
        self.loads += 1
