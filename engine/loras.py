"""LoRAs on a loaded pipeline: which adapters are in it, which are active, at what weights.

diffusers does the work (`load_lora_weights(..., adapter_name=)`, `set_adapters`, `disable_lora`,
`delete_adapters`; PEFT underneath). A batch's LoRAs are set before its pipeline call, so switching
between batches never reloads the model:

- uncompiled (the default), each LoRA file is loaded once as its own adapter and kept (the least
  recently used is deleted past `capacity`); switching is `set_adapters`, which changes no weights;
- compiled (`COMPILE`), a new adapter would change the graph and recompile it, so the pipeline gets
  `enable_lora_hotswap(target_rank=…)` before its first LoRA and fixed adapter slots (`slot0`,
  `slot1`, …): a batch's i-th LoRA is hotswapped into slot i (`load_lora_weights(hotswap=True)`),
  weights copied in place, padded to the target rank. A LoRA that cannot hotswap (it targets layers
  the slot's first LoRA did not) replaces the slot the ordinary way, and the log says it recompiles.

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

DEFAULT_CAPACITY = 8  # uncompiled: adapters kept loaded per model
HOTSWAP_RANK = 64  # compiled: every slot is padded to this rank, so any LoRA up to it hotswaps in


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

    def __init__(self, pipe: Any, *, hotswap: bool = False, capacity: int = DEFAULT_CAPACITY) -> None:
        self.pipe = pipe
        self._unfused = False
        self.hotswap = hotswap
        self.capacity = capacity
        self._loaded: collections.OrderedDict[str, str] = collections.OrderedDict()  # adapter -> file key
        self._active: tuple[tuple[str, float], ...] = ()
        self._enabled = True
        self.loads = 0  # LoRA files read, for tests and benchmarks
        self.hotswaps = 0
        if hotswap:
            pipe.enable_lora_hotswap(target_rank=HOTSWAP_RANK)

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
        names = self._slots(loras) if self.hotswap else [self._adapter(lora) for lora in loras]
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

    def _slots(self, loras: Sequence[LoraWeight]) -> list[str]:
        names = []
        for i, lora in enumerate(loras):
            slot, key = f"slot{i}", file_key(lora.path)
            if self._loaded.get(slot) != key:
                if slot in self._loaded:
                    try:
                        self._load(lora, slot, hotswap=True)
                        self.hotswaps += 1
                    except (ValueError, RuntimeError) as e:  # other target layers: a fresh slot, a recompile
                        log.warning("LoRA %s cannot hotswap into %s (%s); replacing it recompiles", lora.name, slot, e)
                        self.pipe.delete_adapters([slot])
                        self._load(lora, slot)
                else:
                    self._load(lora, slot)
                self._loaded[slot] = key
                self._active = ()
            names.append(slot)
        return names

    def _load(self, lora: LoraWeight, adapter: str, *, hotswap: bool = False) -> None:
        try:
            self.pipe.load_lora_weights(lora.path, adapter_name=adapter, hotswap=hotswap)
        except (ValueError, RuntimeError) as e:
            if hotswap:
                raise
            log.warning("could not load LoRA %s from %s: %s", lora.name, lora.path, e)
            raise RenderError(f"the LoRA `{lora.name}` could not be loaded; the bot's operator has been told") from e
        except OSError as e:
            log.warning("could not read LoRA %s from %s: %s", lora.name, lora.path, e)
            raise RenderError(f"the LoRA `{lora.name}` is no longer there; the bot's operator has been told") from e
        self.loads += 1
