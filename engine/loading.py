"""Where a model comes from and how it is loaded: a diffusers folder, a model in the local Hugging Face
cache, or one `.safetensors` checkpoint; which family it is (engine/family.py); memory settings.

Nothing here downloads: `local_files_only` everywhere, and `HF_HUB_OFFLINE=1` is set by engine/core.py.
Nothing here unpickles: a `.ckpt`/`.pt`/`.bin` checkpoint is refused with one sentence, and a single
file is read with safetensors only (tensor names first, to recognise the family, then the weights).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers.models.qwen2_vl.processing_qwen2_vl import Qwen2VLProcessor
from transformers.processing_utils import ProcessorMixin

from engine.family import (
    FLUX,
    FLUX_SCHNELL,
    QWEN_IMAGE_EDIT,
    QWEN_IMAGE_EDIT_PLUS,
    SD,
    SD3,
    SDXL,
    Family,
    of_class_name,
    unsupported_reason,
)
from engine.requests import ModelHints, RenderError

log = logging.getLogger(__name__)

PICKLED_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl")
SINGLE_FILE_SUFFIXES = (".safetensors",)

# Configs a single file is loaded with: engine/configs/<family>/ if the project ships one, else the
# folder the operator names (SINGLE_FILE_CONFIGS). A config folder is a diffusers folder without weights.
CONFIGS_DIR = Path(__file__).parent / "configs"

# Words in a model's name that mean a few-step distilled model (SDXL-Turbo, SD3.5 Large Turbo, Lightning).
FEW_STEP_WORDS = ("turbo", "lightning", "hyper", "schnell", "lcm")
FEW_STEP_HINTS = (4, 0.0)


class ModelSourceError(RenderError):
    """The model's source cannot be used (missing, pickled, an unknown family): one sentence saying why."""


def is_single_file(source: str | Path) -> bool:
    return Path(source).suffix.lower() in SINGLE_FILE_SUFFIXES + PICKLED_SUFFIXES


def check_single_file(source: str | Path) -> Path:
    """The checkpoint file itself, resolved; ModelSourceError for a pickled or missing one.

    Resolving follows links once, here, so what is loaded is the file the operator named and
    nothing a name inside it points to.
    """
    path = Path(source)
    if path.suffix.lower() in PICKLED_SUFFIXES:
        raise ModelSourceError(
            f"{path.name} is a pickled checkpoint, which can run code when loaded: dreamgrid loads only"
            " .safetensors files (convert it once, on a machine you trust)"
        )
    resolved = path.resolve()
    if not resolved.is_file():
        raise ModelSourceError(f"model file {path.name!r} does not exist")
    return resolved


def tensor_names(path: Path) -> list[str]:
    """A safetensors file's tensor names, read from its header (no weights, no pickle)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        return list(f.keys())


def family_of_tensor_names(names: list[str]) -> Family | None:
    """The family an original-layout (A1111/ComfyUI, or BFL/Stability) checkpoint belongs to."""
    keys = set(names)

    def has(prefix: str) -> bool:
        return any(k.startswith(prefix) for k in keys)

    if has("conditioner.embedders.1.model.") or has("conditioner.embedders.0.model.transformer."):
        return SDXL
    if has("model.diffusion_model.joint_blocks.") or has("joint_blocks."):
        return SD3
    if has("double_blocks.") or has("model.diffusion_model.double_blocks."):
        guidance = has("guidance_in.") or has("model.diffusion_model.guidance_in.")
        return FLUX if guidance else FLUX_SCHNELL
    if has("model.diffusion_model.input_blocks.") and (has("cond_stage_model.") or has("first_stage_model.")):
        return SD  # SD1.x (CLIP) and SD2.x (OpenCLIP) alike
    return None


def family_of_single_file(path: Path, names: list[str] | None = None) -> Family:
    family = family_of_tensor_names(tensor_names(path) if names is None else names)
    if family is None:
        raise ModelSourceError(f"{path.name} is not a checkpoint of a family dreamgrid knows (SD1.x/2.x, SDXL)")
    return family


def model_index(source: str | Path) -> dict[str, Any] | None:
    """A folder's or cached model's model_index.json, or None if there is none."""
    folder = Path(source)
    if (folder / "model_index.json").is_file():
        return dict(json.loads((folder / "model_index.json").read_text()))
    from huggingface_hub import try_to_load_from_cache

    try:
        cached = try_to_load_from_cache(str(source), "model_index.json")
    except Exception:  # not a valid repo id either
        return None
    if isinstance(cached, str):
        return dict(json.loads(Path(cached).read_text()))
    return None


def family_of_source(source: str | Path) -> Family:
    """The family of a folder, a cached model or a single file, from config alone (never the weights)."""
    if is_single_file(source):
        return family_of_single_file(check_single_file(source))
    index = model_index(source)
    if index is None:
        raise ModelSourceError(
            f"could not load model {str(source)!r}: no such diffusers folder, and no such model in the local Hugging"
            " Face cache (dreamgrid never downloads: fetch it once with `hf download`)"
        )
    class_name = str(index.get("_class_name", ""))
    family = of_class_name(class_name)
    if family is None:
        raise ModelSourceError(unsupported_reason(class_name))
    if family is FLUX and not _flux_guidance_embeds(source):
        return FLUX_SCHNELL
    return family


def _flux_guidance_embeds(source: str | Path) -> bool:
    from diffusers import FluxTransformer2DModel

    try:
        config = FluxTransformer2DModel.load_config(str(source), subfolder="transformer", local_files_only=True)
    except Exception:
        return True
    return bool(config.get("guidance_embeds", False))


def hints_for(source: str | Path, family: Family) -> ModelHints:
    """The family's defaults, or a few-step model's when its name says it is one (sdxl-turbo: 4 steps, no CFG)."""
    hints = family.hints()
    name = Path(str(source)).name.lower()
    few_step = any(word in name for word in FEW_STEP_WORDS)
    if few_step and (hints.steps is None or hints.steps > FEW_STEP_HINTS[0]):
        return ModelHints(family.name, *FEW_STEP_HINTS, family.size_multiple)
    return hints


def single_file_config(family: Family, configs: dict[str, str] | None = None, names: list[str] | None = None) -> str:
    """The config folder a single file of `family` is loaded with: the operator's for that family, or
    the one the project ships (engine/configs/: SD 1.x and SDXL base; an SD 2.x file, whose text
    encoder is OpenCLIP's, needs the operator's)."""
    if configs and family.key in configs:
        return configs[family.key]
    shipped = CONFIGS_DIR / family.key
    sd2 = family is SD and any(name.startswith("cond_stage_model.model.") for name in names or ())
    if (shipped / "model_index.json").is_file() and not sd2:
        return str(shipped)
    raise ModelSourceError(
        f"a single-file {family.name} checkpoint needs that family's config folder: set SINGLE_FILE_CONFIGS"
        f" ({family.key}=/path/to/a/diffusers/folder; weights not needed, e.g. `hf download <base model>"
        ' --include "*.json" "*.txt"`)'
    )


def load_pipeline(
    source: str | Path, *, dtype: Any, safety_checker: bool, single_file_configs: dict[str, str] | None = None
) -> Any:
    """A text-to-image pipeline for `source` (folder, cached id or single file), on the CPU, offline;
    for a family that draws nothing from text alone (Qwen-Image-Edit), the model's own pipeline."""
    from diffusers import AutoPipelineForText2Image, DiffusionPipeline
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    kwargs: dict[str, Any] = {"dtype": dtype, "local_files_only": True}
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()  # its "Loading weights" bar
    try:
        if is_single_file(source):
            path = check_single_file(source)
            names = tensor_names(path)
            family = family_of_single_file(path, names)
            config = single_file_config(family, single_file_configs, names)
            if Path(config).parent == CONFIGS_DIR:  # a shipped config folder: CLIP's tokenizers from its merges
                kwargs.update(_shipped_tokenizers(family))
            return _single_file_class(family).from_single_file(str(path), config=config, **kwargs)
        family = family_of_source(source)
        if family in (SD, SDXL) and not safety_checker:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if family in (QWEN_IMAGE_EDIT, QWEN_IMAGE_EDIT_PLUS):
            processor = PictureQwenProcessor.from_pretrained(str(source), subfolder="processor", local_files_only=True)
            return DiffusionPipeline.from_pretrained(str(source), processor=processor, **kwargs)
        return AutoPipelineForText2Image.from_pretrained(str(source), **kwargs)
    finally:
        diffusers_logging.enable_progress_bar()


class PictureQwenProcessor(Qwen2VLProcessor):
    """Qwen-Image-Edit's Qwen2-VL processor for pictures only (its tokenizer and image processor).

    transformers builds Qwen2VLProcessor's video half with torchvision, which dreamgrid does not
    install (its wheels on the package index are built for another torch); Qwen-Image-Edit shows its
    text encoder pictures, never videos, so its model's `processor/` folder is loaded without it.
    """

    def __init__(self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None, **kwargs: Any):
        self.image_token, self.video_token = "<|image_pad|>", "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)


def _shipped_tokenizers(family: Family) -> dict[str, Any]:
    """The tokenizers a shipped config folder leaves out: CLIP's, for SD 1.x and both of SDXL's encoders."""
    from engine.tokenizer import clip_tokenizer

    if family is SDXL:
        return {"tokenizer": clip_tokenizer(), "tokenizer_2": clip_tokenizer(pad_token="!")}  # as SDXL's pad
    return {"tokenizer": clip_tokenizer()}


def _single_file_class(family: Family) -> Any:
    import diffusers

    names = {
        "sd": "StableDiffusionPipeline",
        "sdxl": "StableDiffusionXLPipeline",
        "sd3": "StableDiffusion3Pipeline",
        "flux": "FluxPipeline",
        "flux-schnell": "FluxPipeline",
    }
    if family.key not in names:
        raise ModelSourceError(f"{family.name} models cannot be loaded from a single file")
    return getattr(diffusers, names[family.key])


# -- memory ------------------------------------------------------------------------------------

MEMORY_MODES = ("full", "model_offload", "sequential_offload", "group_offload")


@dataclass(frozen=True, slots=True)
class MemorySettings:
    """How a model's weights sit on a GPU: all resident (`full`), or offloaded to the CPU between uses.

    `model_offload` moves each whole component to the GPU while it runs (diffusers'
    `enable_model_cpu_offload`: ~text encoders + transformer never at once); `group_offload` streams
    groups of blocks (`enable_group_offload`, least memory, slowest); `sequential_offload` moves
    layer by layer. `quantize` stores the denoiser's linear weights in 8 bits when torchao is installed.
    CUDA only: on a CPU everything is resident anyway.
    """

    mode: str = "full"
    quantize: str | None = None  # None, or "int8" (torchao weight-only)

    def __post_init__(self) -> None:
        if self.mode not in MEMORY_MODES:
            raise ValueError(f"memory mode must be one of {', '.join(MEMORY_MODES)}, got {self.mode!r}")
        if self.quantize not in (None, "int8"):
            raise ValueError(f"quantize must be int8 or unset, got {self.quantize!r}")

    @property
    def offloads(self) -> bool:
        return self.mode != "full"


def weights_gb(pipe: Any) -> float:
    """The pipeline's parameters and buffers, in GB (10^9 bytes): what a budget counts per model."""
    import torch

    total = 0
    for module in getattr(pipe, "components", {}).values():
        if isinstance(module, torch.nn.Module):
            total += sum(p.numel() * p.element_size() for p in module.parameters())
            total += sum(b.numel() * b.element_size() for b in module.buffers())
    return total / 1e9


def place(pipe: Any, device: Any, dtype: Any, memory: MemorySettings, denoiser: Any) -> None:
    """Move `pipe` to `device` as `memory` says (on a CPU always resident)."""
    import torch

    if memory.quantize is not None:
        _quantize(denoiser, memory.quantize)
    if device.type != "cuda" or not memory.offloads:
        # Cast only when needed: diffusers warns on every dtype cast through `.to()`.
        pipe.to(device) if denoiser.dtype == dtype else pipe.to(device, dtype)
        return
    if denoiser.dtype != dtype:
        pipe.to(dtype=dtype)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if memory.mode == "model_offload":
        pipe.enable_model_cpu_offload(gpu_id=index)
    elif memory.mode == "sequential_offload":
        pipe.enable_sequential_cpu_offload(gpu_id=index)
    else:
        for name, module in pipe.components.items():
            offload = getattr(module, "enable_group_offload", None)  # diffusers' models have it
            if isinstance(module, torch.nn.Module) and callable(offload):
                offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1, use_stream=True)
            elif isinstance(module, torch.nn.Module):
                log.info("%s has no group offload; it stays on %s", name, device)
                module.to(device)


def _quantize(denoiser: Any, kind: str) -> None:
    """Weight-only int8 of the denoiser's linear layers (torchao); a clear error when it is missing."""
    try:
        from torchao.quantization import Int8WeightOnlyConfig, quantize_  # type: ignore[import-not-found]
    except ImportError as e:  # (not installable on the build machines: an optional dependency)
        raise ModelSourceError("QUANTIZE=int8 needs torchao: pip install torchao") from e
    quantize_(denoiser, Int8WeightOnlyConfig())
