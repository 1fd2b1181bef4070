"""What a LoRA file is for, read from its `.safetensors` header alone: pure Python, no torch.

A LoRA fits a model when it was trained on that model's denoiser: a UNet LoRA (diffusers/PEFT
`unet.…lora_A`, kohya `lora_unet_…lora_down`, old diffusers `…processor.to_k_lora.down`) on a UNet
model whose cross-attention reads text embeddings of the same width (768 for SD 1.x, 1024 for SD 2.x,
2048 for SDXL, 128 for the shipped model). A transformer LoRA (Flux, SD3, …) fits no UNet. The bot,
the fake engine and the Ray engine ask here before a job is queued, so a LoRA of another family is
refused with one sentence, never found out by a crash at render.

The header is the first 8 bytes (its length, little-endian) and that much JSON: tensor names, dtypes
and shapes. Reading it costs a few KB, whatever the file's size.
"""

from __future__ import annotations

import json
import re
import struct
from dataclasses import dataclass
from pathlib import Path

MAX_HEADER_BYTES = 100 * 1024 * 1024  # safetensors' own limit

# The down (A) matrix of a cross-attention key projection: its input width is the text embedding's.
_CONTEXT_KEY = re.compile(
    r"attn2[._](?:processor[._])?to_k(?:_lora)?[._](?:lora[._])?(?:lora_A|lora_down|down)(?:[._]default)?\.weight$"
)
_DOWN = re.compile(r"(?:lora_A|lora_down|[._]down)(?:[._]default)?\.weight$")
_UNET = ("unet.", "lora_unet_")
_TEXT = ("text_encoder", "lora_te")


class LoraFileError(ValueError):
    """Not a LoRA we can read: the message is one short line, with no server path in it."""


@dataclass(frozen=True, slots=True)
class LoraInfo:
    denoiser: str | None  # "unet", "transformer", or None (a text-encoder-only LoRA)
    context_dim: int | None  # the text embedding width its cross-attention was trained on (UNet LoRAs)
    rank: int  # the largest rank among its matrices
    tensors: int


def read_header(path: str | Path) -> dict[str, list[int]]:
    """Tensor name -> shape, from a `.safetensors` file's header (LoraFileError if it is none)."""
    try:
        with open(path, "rb") as file:
            prefix = file.read(8)
            if len(prefix) != 8:
                raise LoraFileError("it is not a .safetensors file")
            (length,) = struct.unpack("<Q", prefix)
            if not 2 <= length <= MAX_HEADER_BYTES:
                raise LoraFileError("it is not a .safetensors file")
            header = json.loads(file.read(length))
    except OSError:
        raise LoraFileError("its file cannot be read") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise LoraFileError("it is not a .safetensors file") from None
    if not isinstance(header, dict):
        raise LoraFileError("it is not a .safetensors file")
    return {
        name: list(entry.get("shape", []))
        for name, entry in header.items()
        if name != "__metadata__" and isinstance(entry, dict)
    }


def inspect(path: str | Path) -> LoraInfo:
    """What the LoRA at `path` was trained on; LoraFileError if it holds no LoRA matrices."""
    shapes = read_header(path)
    downs = {name: shape for name, shape in shapes.items() if _DOWN.search(name) and len(shape) >= 2}
    if not downs:
        raise LoraFileError("it holds no LoRA weights")
    names = list(downs)
    if any(name.startswith(_UNET) for name in names):
        denoiser: str | None = "unet"
    elif all(name.startswith(_TEXT) for name in names):
        denoiser = None
    else:  # transformer.…, lora_transformer_…, or bare Flux/SD3 block names
        denoiser = "transformer"
    context = next((shape[1] for name, shape in downs.items() if _CONTEXT_KEY.search(name)), None)
    return LoraInfo(denoiser, context, max(shape[0] for shape in downs.values()), len(shapes))


def fit_reason(info: LoraInfo, *, family: str, denoiser: str, context_dim: int | None) -> str | None:
    """Why a LoRA described by `info` cannot go on a model (of `family`, whose denoiser is `denoiser`
    with cross-attention over `context_dim`-wide text embeddings), or None when it fits."""
    if info.denoiser is not None and info.denoiser != denoiser:
        kind = "UNet (Stable Diffusion 1.x/2.x, SDXL)" if info.denoiser == "unet" else "transformer (Flux, SD3, …)"
        return f"it is a LoRA for {kind} models, and this is a {family} model"
    if info.context_dim is not None and context_dim is not None and info.context_dim != context_dim:
        trained = {768: "Stable Diffusion 1.x", 1024: "Stable Diffusion 2.x", 2048: "Stable Diffusion XL"}
        made_for = trained.get(info.context_dim, f"another model ({info.context_dim}-wide text embeddings)")
        return f"it was trained for {made_for}, not for this {family} model"
    return None
