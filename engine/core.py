"""The diffusers-backed engine: loads models, batches compatible requests, renders on one
worker thread per device, reports progress on the event loop, and can be interrupted.

    async with DiffusersEngine(model="dreamgrid-tiny") as engine:
        result = await engine.render(RenderRequest(action=Action.IMAGINE, prompt="a red circle",
                                                   seeds=(1, 2, 3, 4), width=64, height=64))

Threads: the event loop only queues jobs and awaits futures. The worker thread owns every
pipeline (diffusers pipelines are not thread-safe) and hands results, errors and progress back
with `loop.call_soon_threadsafe`. Batching: the worker takes the oldest job, waits for compatible
ones (same `RenderRequest.batch_key`) at most `batch_window_s` after it arrived, and never longer than
BATCH_WAIT_FRACTION of how long such a render has been taking (so a lone request pays at most
~2 %), then renders them all in one pipeline call; each request keeps its own prompt, negative
prompt, seeds, chaos, progress callback and cancellation.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import ctypes.util
import dataclasses
import gc
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# diffusers still passes this retired argument to huggingface_hub; the warning tells an operator nothing.
warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)

import torch  # noqa: E402
from PIL import Image  # noqa: E402

from engine.actions import animate as animate_action  # noqa: E402
from engine.actions import blend as blend_action  # noqa: E402
from engine.actions import edit as edit_action  # noqa: E402
from engine.actions import image_prompt as image_prompt_action  # noqa: E402
from engine.actions import imagine as imagine_action  # noqa: E402
from engine.actions import inpaint as inpaint_action  # noqa: E402
from engine.actions import outpaint as outpaint_action  # noqa: E402
from engine.actions import upscale as upscale_action  # noqa: E402
from engine.actions import variation as variation_action  # noqa: E402
from engine.actions.common import FLAGGED, RenderInterrupted  # noqa: E402
from engine.describe import SHIPPED_DESCRIBER, Describer, DescriberError  # noqa: E402
from engine.family import SD, Family, of_pipeline  # noqa: E402
from engine.loading import (  # noqa: E402
    MemorySettings,
    ModelSourceError,
    family_of_source,
    hints_for,
    load_pipeline,
    place,
    weights_gb,
)
from engine.lora_files import LoraFileError, fit_reason, inspect  # noqa: E402
from engine.loras import LoraSet, file_key  # noqa: E402
from engine.optimize import Speedups, padded_image_count, prepare_pipeline, warm_up  # noqa: E402
from engine.params import SHIPPED_GUIDANCE, SHIPPED_NEW_AREA, aspect_buckets  # noqa: E402
from engine.preview import fit_latent_rgb, preview_grid  # noqa: E402
from engine.requests import (  # noqa: E402
    Action,
    DescribeRequest,
    DescribeResult,
    Feature,
    ImagePromptMethod,
    ModelHints,
    ProgressCallback,
    RenderError,
    RenderProgress,
    RenderRequest,
    RenderResult,
    TuneRequest,
    TuneResult,
    refusal,
)
from engine.video import (  # noqa: E402
    MOTION,
    MOTION_FOLDER,
    NO_VIDEO_MODEL,
    VideoFamily,
    VideoModel,
    VideoSettings,
    family_of_class,
    load_motion_adapter,
    load_video_pipeline,
)
from engine.video import family_of_source as video_family_of_source  # noqa: E402

log = logging.getLogger(__name__)

TINY_MODEL = "dreamgrid-tiny"
WEIGHTS_DIR = Path(__file__).parent / "weights"


def _picture_pipeline(request: RenderRequest) -> str:
    """An image prompt or blend starts from the pictures (img2img) unless an IP-Adapter steers text2img."""
    return "img2img" if request.image_prompt_method == ImagePromptMethod.IMAGE_TO_IMAGE else "text2img"


_ACTIONS: Mapping[
    Action, tuple[Callable[..., Any], Callable[[RenderRequest], None], Callable[[RenderRequest], str]]
] = {
    # action -> (render function, check_inputs, which of the model's pipelines a request runs on)
    Action.IMAGINE: (imagine_action.imagine, imagine_action.check_inputs, lambda r: "text2img"),
    Action.VARIATION: (variation_action.variation, variation_action.check_inputs, lambda r: "img2img"),
    Action.UPSCALE: (upscale_action.upscale, upscale_action.check_inputs, lambda r: "img2img"),
    Action.OUTPAINT: (outpaint_action.outpaint, outpaint_action.check_inputs, lambda r: "inpaint"),
    Action.INPAINT: (inpaint_action.inpaint, inpaint_action.check_inputs, lambda r: "inpaint"),
    Action.IMAGE_PROMPT: (image_prompt_action.image_prompt, image_prompt_action.check_inputs, _picture_pipeline),
    Action.BLEND: (blend_action.blend, blend_action.check_inputs, _picture_pipeline),
    # the text-to-image pipeline of an instruction-editing family takes the picture as its reference
    Action.EDIT: (edit_action.edit, edit_action.check_inputs, lambda r: "text2img"),
    # on the video model (`DiffusersEngine._run_clips`), one clip per request
    Action.ANIMATE: (animate_action.animate, animate_action.check_inputs, lambda r: "video"),
}


# A request waits for company at most this fraction of a typical render of its kind.
BATCH_WAIT_FRACTION = 0.02


class _Unreadable(ModelSourceError):
    """The model is there but its config could not be read."""


@dataclass
class EngineStats:
    """Counters for tests and benchmarks."""

    batches: int = 0  # pipeline calls
    requests: int = 0  # requests rendered (in any batch)
    images: int = 0
    batch_sizes: list[int] = field(default_factory=list)  # requests per pipeline call


@dataclass
class _Model:
    name: str
    family: Family
    text2img: Any
    img2img: Any
    inpaint: Any
    latent_rgb: torch.Tensor
    ip_adapter: image_prompt_action.IPAdapter | None = None
    loras: LoraSet | None = None  # None: the family takes no LoRA
    video: VideoModel | None = None  # the shipped motion model on this model's UNet, once Animate asked for it


@dataclass(eq=False)
class _Job:
    request: RenderRequest
    model: str
    key: tuple[Any, ...]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[RenderResult]
    progress: ProgressCallback | None
    arrived: float
    cancelled: threading.Event = field(default_factory=threading.Event)

    def deliver(self, event: RenderProgress) -> None:  # runs on the event loop
        if self.progress is not None and not self.future.done():
            try:
                self.progress(event)
            except Exception:
                log.exception("progress callback failed")

    def resolve(self, result: RenderResult | None, error: BaseException | None) -> None:  # on the event loop
        if self.future.done():
            return
        if isinstance(error, asyncio.CancelledError) or self.cancelled.is_set():  # nobody awaits it any more
            self.future.cancel()
        elif error is not None:
            self.future.set_exception(error)
        else:
            self.future.set_result(result)  # type: ignore[arg-type]

    def post(self, fn: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nobody is waiting any more
            self.loop.call_soon_threadsafe(fn, *args)


def _release_freed_heap() -> None:
    """Give freed heap pages back to the OS (glibc keeps them otherwise, and RSS never shrinks)."""
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # not glibc
        ctypes.CDLL(libc_name).malloc_trim(0)


def _pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _pick_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype == "auto":
        # fp16/bf16 on CPU are ~8x slower than fp32 (measured on two cores).
        return torch.float16 if device.type == "cuda" else torch.float32
    names = {
        "fp16": torch.float16,
        "float16": torch.float16,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp32": torch.float32,
        "float32": torch.float32,
    }
    if dtype not in names:
        raise ValueError(f"dtype must be auto, fp16, bf16 or fp32, got {dtype!r}")
    return names[dtype]


class DiffusersEngine:
    """The `engine.requests.Engine` protocol on diffusers.

    model: the default model — a diffusers folder, a model id in the local HF cache, or
        `dreamgrid-tiny` (engine/weights/dreamgrid-tiny/ if present, else a random tiny model);
        or a name that `sources` maps to one of those.
    models: every installed model the bot may offer (default: just `model`); loaded lazily and kept
        in a least-recently-used set: at most `max_loaded_models`, and at most `memory_budget_gb`
        (the GPU's allocated memory on CUDA, else the models' weights; the model just loaded always
        stays). An evicted model's memory is freed; a later job for it loads it again.
    sources: model name -> where it is loaded from, for models known by a short name.
    schedulers: model name -> a diffusers scheduler class name to use instead of the model's own.
    pipelines: already-built pipelines by name (tests, benchmarks); they count as installed.
    inpaint_unets: by model name, a diffusers folder (or cached id) of a 9-channel inpainting model
        of the same family, whose UNet Zoom/Pan/Vary (Region) use instead of the model's own.
    max_batch: most images in one pipeline call (a request is never split).
    speedups: the switches engine/optimize.py applies to every loaded model (default: all on but
        compile); `dtype` is the half-precision switch.
    warm_up_sizes: the tile sizes to compile for when `speedups.compile` is on (default: every size
        `--ar` can give on that model; benchmarks and tests name fewer).
    describer: the image-to-text model behind `describe` (loaded on first use, on `device`).
    memory: how weights sit on a GPU (engine/loading.py: offload, int8 weights); `memory_budget_gb`
        also counts weights offloaded to the CPU, so offloaded models are evicted by it too.
    single_file_configs: family key -> a config folder for single `.safetensors` checkpoints of it.
    video: VIDEO_MODEL and its memory settings (engine/video.py); without a source, Animate draws on
        the shipped motion model, on SD-family models whose UNet it was trained for.
    video_pipeline: an image-to-video pipeline already built (tests, benchmarks), as if VIDEO_MODEL.
    """

    def __init__(
        self,
        model: str = TINY_MODEL,
        *,
        models: Sequence[str] | None = None,
        pipelines: Mapping[str, Any] | None = None,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        batch_window_s: float = 0.05,
        max_batch: int | None = None,
        speedups: Speedups | None = None,
        warm_up_sizes: Sequence[tuple[int, int]] | None = None,
        safety_checker: bool = False,
        ip_adapter: str | Path | None = None,
        ip_adapter_weight: str | None = None,
        describer: str = SHIPPED_DESCRIBER,
        inpaint_unets: Mapping[str, str] | None = None,
        sources: Mapping[str, str] | None = None,
        schedulers: Mapping[str, str] | None = None,
        max_loaded_models: int = 2,
        memory_budget_gb: float | None = None,
        memory: MemorySettings | None = None,
        single_file_configs: Mapping[str, str] | None = None,
        video: VideoSettings | None = None,
        video_pipeline: Any = None,
    ) -> None:
        if max_loaded_models < 1:
            raise ValueError(f"max_loaded_models must be at least 1, got {max_loaded_models}")
        self.device = _pick_device(device)
        self.dtype = _pick_dtype(dtype, self.device)
        self.batch_window_s = batch_window_s
        self.max_batch = max_batch or (32 if self.device.type == "cuda" else 16)
        self.speedups = speedups or Speedups()
        self.warm_up_sizes = warm_up_sizes
        self.safety_checker = safety_checker
        # An IP-Adapter folder for the default model (adapters are trained for one model family).
        self.ip_adapter = Path(ip_adapter) if ip_adapter else None
        self.ip_adapter_weight = ip_adapter_weight
        self._preloaded = dict(pipelines or {})
        self._inpaint_unets = dict(inpaint_unets or {})
        self._sources = dict(sources or {})
        self._by_source = {source: name for name, source in self._sources.items()}
        self._schedulers = dict(schedulers or {})
        self._default = model
        names = list(models) if models is not None else [model]
        for name in [model, *self._preloaded]:
            if name not in names:
                names.append(name)
        self._models = tuple(names)
        self.max_loaded_models = max_loaded_models
        self.memory_budget_gb = memory_budget_gb
        self.memory = memory or MemorySettings()
        self._single_file_configs = dict(single_file_configs or {})
        self._families: dict[str, Family | ModelSourceError] = {}  # by model name, from config
        # Least recently used first. Changed by the worker thread; read by the event loop under the lock.
        self._loaded: collections.OrderedDict[str, _Model] = collections.OrderedDict()
        self._loaded_lock = threading.Lock()
        self._pending: collections.deque[_Job] = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self.stats = EngineStats()
        self._render_s: dict[tuple[Any, ...], float] = {}
        self._native_sizes: dict[str, int] = {}  # recent render time per batch key (EMA)
        self._describer_name = describer
        self._describer: Describer | None = None
        self._describer_lock = threading.Lock()  # generation is not thread-safe; one describe at a time
        self._safety_checkers: dict[str, bool] = {}
        self._context_dims: dict[str, int | None] = {}  # by model: its UNet's cross-attention width
        self._lora_fits: dict[tuple[str, str], str | None] = {}  # (model, file key) -> lora_refusal's answer
        self._tune_lock = threading.Lock()  # one /tune trains at a time
        self.video = video or VideoSettings()
        self._video_preloaded = video_pipeline
        self._video: VideoModel | None = None  # the operator's video model, loaded on the first clip

    # -- lifecycle ---------------------------------------------------------------------------

    async def __aenter__(self) -> DiffusersEngine:
        # Every model members may pick must be here (MODELS was once only found missing by a member).
        for name in self._models:
            await asyncio.to_thread(self._check_installed, name)
        # Load the default model before taking work, off the event loop.
        await asyncio.to_thread(self._model, self._default)
        self._thread = threading.Thread(target=self._worker, name=f"dreamgrid-render-{self.device}", daemon=True)
        self._thread.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        with self._cond:
            self._closed = True
            leftover = list(self._pending)
            self._pending.clear()
            self._cond.notify_all()
        for job in leftover:
            job.post(job.resolve, None, RenderError("the engine is shutting down"))
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    # -- the protocol ------------------------------------------------------------------------

    @property
    def models(self) -> Sequence[str]:
        return self._models

    @property
    def default_model(self) -> str:
        return self._default

    @property
    def loaded_models(self) -> Sequence[str]:
        with self._loaded_lock:
            return tuple(self._loaded)

    async def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._closed

    def native_size(self, model: str | None = None) -> int:
        """The tile side the model was trained at (512 for SD1.5, 1024 for SDXL/SD3/Flux, 64 for the tiny model).

        Called on the event loop: a model that is not loaded yet is answered from its config
        files (a few KB), never by loading its weights here.
        """
        name = model or self._default
        with self._loaded_lock:
            loaded = self._loaded.get(name)
        if loaded is not None:
            return loaded.family.native_size(loaded.text2img)
        if name not in self._native_sizes:
            self._native_sizes[name] = self._native_size_from_config(name)
        return self._native_sizes[name]

    def family(self, model: str | None = None) -> Family:
        """The model's family, from its config (never its weights); ModelSourceError if it has none here."""
        name = model or self._default
        name = self._by_source.get(name, name)
        if name not in self._families:
            try:
                if name in self._preloaded:
                    self._families[name] = of_pipeline(self._preloaded[name])
                else:
                    source = self._source(name)
                    if source == str(WEIGHTS_DIR / TINY_MODEL) and not (WEIGHTS_DIR / TINY_MODEL).is_dir():
                        self._families[name] = SD  # the random tiny fallback
                    else:
                        self._families[name] = family_of_source(source)
            except ModelSourceError as e:
                self._families[name] = e
            except Exception:
                # A broken config: the operator reads why in the log; members get no server path.
                log.exception("could not read the config of model %r", name)
                where = self._source(name)
                shown = Path(where).name if Path(where).is_absolute() or where.startswith(".") else where
                self._families[name] = _Unreadable(f"could not load model {shown!r}; the bot's operator has been told")
        found = self._families[name]
        if isinstance(found, ModelSourceError):
            raise found
        return found

    def supports(self, model: str | None, what: Action | Feature) -> str | None:
        """None when the model's family can do `what`, else a sentence naming the family and why."""
        name = model or self._default
        name = self._by_source.get(name, name)
        if name not in self._models:
            return None  # render() says it is not installed
        try:
            family = self.family(name)
        except ModelSourceError as e:
            return str(e)
        if what is Action.ANIMATE or what is Feature.END_FRAME:
            return self._video_refusal(name, what)
        steered = what is Action.BLEND or what is Action.IMAGE_PROMPT
        if steered and self.image_prompt_method(name) is ImagePromptMethod.IP_ADAPTER and not family.ip_adapter:
            return f"{family.name} models cannot use the IP-Adapter (IP_ADAPTER) for image prompts"
        return family.supports(what)

    def lora_refusal(self, model: str | None, path: str) -> str | None:
        """None when the LoRA at `path` fits the model; else why not. From the file's header and the
        model's config (its family, its cross-attention width), cached per file version."""
        name = model or self._default
        name = self._by_source.get(name, name)
        try:
            family = self.family(name)
        except ModelSourceError as e:
            return str(e)
        reason = self.no_lora(family)
        if reason is not None:
            return reason
        key = (name, file_key(path))
        if key not in self._lora_fits:
            try:
                info = inspect(path)
            except LoraFileError as e:
                self._lora_fits[key] = str(e)
            else:
                self._lora_fits[key] = fit_reason(
                    info, family=family.name, denoiser=family.denoiser_name, context_dim=self.lora_context_dim(name)
                )
        return self._lora_fits[key]

    def no_lora(self, family: Family) -> str | None:
        """Why no LoRA goes on this engine's models of `family`, or None."""
        if self.speedups.compile != "off":
            # Each set of adapters is another graph per tile size: past torch's recompile limit a
            # fullgraph compile fails outright (measured on the tiny model), so LoRAs wait for COMPILE=off.
            return "this bot compiles its model (COMPILE), and LoRAs need COMPILE=off for now"
        return family.lora_refusal()

    def lora_context_dim(self, name: str) -> int | None:
        """The width of the text embeddings the model's UNet attends to (None: unknown, not checked)."""
        if name not in self._context_dims:
            with self._loaded_lock:
                loaded = self._loaded.get(name)
            pipe = loaded.text2img if loaded is not None else self._preloaded.get(name)
            dim: int | None = None
            try:
                if pipe is not None:
                    dim = int(pipe.unet.config.cross_attention_dim)
                else:
                    from diffusers import UNet2DConditionModel

                    config = UNet2DConditionModel.load_config(
                        self._source(name), subfolder="unet", local_files_only=True
                    )
                    dim = int(config["cross_attention_dim"])
            except Exception:  # a single file, the random tiny fallback: the render's load says more
                dim = None
            self._context_dims[name] = dim
        return self._context_dims[name]

    def video_family(self, model: str | None = None) -> VideoFamily:
        """What draws this model's clips, from config; ModelSourceError (with the sentence) when nothing does."""
        if self._video_preloaded is not None:
            family = family_of_class(type(self._video_preloaded).__name__)
            if family is None:
                raise ModelSourceError(f"{type(self._video_preloaded).__name__} is not an image-to-video pipeline")
            return family
        if self.video.source:
            return video_family_of_source(self.video.source)
        name = model or self._default
        if self.family(name).key != "sd" or not self._motion_fits(name):
            raise ModelSourceError(NO_VIDEO_MODEL)
        return MOTION

    def _motion_fits(self, name: str) -> bool:
        """Whether the shipped motion model is here and was trained for this model's UNet (block widths)."""
        import json

        try:
            adapter = json.loads((MOTION_FOLDER / "config.json").read_text())
            if name in self._preloaded:
                unet = dict(self._preloaded[name].unet.config)
            else:
                unet = json.loads((Path(self._source(name)) / "unet" / "config.json").read_text())
        except (OSError, ValueError, AttributeError):
            return False
        return list(adapter["block_out_channels"]) == list(unet["block_out_channels"]) and adapter[
            "motion_layers_per_block"
        ] == unet.get("layers_per_block")

    def _video_refusal(self, name: str, what: Action | Feature) -> str | None:
        try:
            family = self.video_family(name)
        except ModelSourceError as e:
            return str(e)
        if what is Feature.END_FRAME and not family.end_frame:
            return (
                f"{family.name} clips cannot end on a chosen picture (`end`, --loop): its pipeline takes a first"
                " frame only"
            )
        return None

    def defaults(self, model: str | None = None) -> ModelHints:
        name = model or self._default
        try:
            family = self.family(name)
        except ModelSourceError:
            return ModelHints()
        hints = hints_for(self._sources.get(name, name), family)
        if self._source(name) == str(WEIGHTS_DIR / TINY_MODEL) and (WEIGHTS_DIR / TINY_MODEL).is_dir():
            # (not the random fallback's)
            return dataclasses.replace(hints, guidance_scale=SHIPPED_GUIDANCE, new_area_strength=SHIPPED_NEW_AREA)
        return hints

    def has_safety_checker(self, model: str | None = None) -> bool:
        """Whether this model's images can be checked: SAFETY_CHECKER is on and the model ships a checker.

        A model not loaded yet is answered from its model_index.json, never by loading it here.
        """
        if not self.safety_checker:
            return False
        name = model or self._default
        if name not in self._safety_checkers:
            with self._loaded_lock:
                loaded = self._loaded.get(name)
            pipe = loaded.text2img if loaded is not None else self._preloaded.get(name)
            if pipe is not None:
                self._safety_checkers[name] = getattr(pipe, "safety_checker", None) is not None
            else:
                self._safety_checkers[name] = self._safety_checker_from_config(name)
        return self._safety_checkers[name]

    def _safety_checker_from_config(self, name: str) -> bool:
        from engine.loading import is_single_file, model_index

        source = self._source(name)
        if is_single_file(source):
            return False  # single files are loaded without one
        index = model_index(source)
        if index is None:
            return False  # the render itself will report a missing model
        library, _ = index.get("safety_checker") or (None, None)
        return library is not None

    def _source(self, name: str) -> str:
        """Where a model is loaded from: its source if it has a short name, the shipped folder for the tiny model."""
        source = self._sources.get(name, name)
        return str(WEIGHTS_DIR / TINY_MODEL) if source == TINY_MODEL else source

    def _native_size_from_config(self, name: str) -> int:
        from diffusers import AutoencoderKL, SD3Transformer2DModel, UNet2DConditionModel

        if name in self._preloaded:
            pipe = self._preloaded[name]
            return of_pipeline(pipe).native_size(pipe)
        source = self._source(name)
        try:
            family = self.family(name)
            if family.key in ("sd", "sdxl") and source.endswith(".safetensors"):
                return 1024 if family.key == "sdxl" else 512  # what the config folder it loads with says
            vae = AutoencoderKL.load_config(source, subfolder="vae", local_files_only=True)
            native = family.native_size_of_vae_config(vae)  # (Qwen-Image's VAE config has no sizes)
            if native is not None:
                return native
            factor = 2 ** (len(vae["block_out_channels"]) - 1)
            if family.denoiser_name == "unet":
                unet = UNet2DConditionModel.load_config(source, subfolder="unet", local_files_only=True)
                return int(unet["sample_size"]) * factor
            if family.key == "sd3":
                transformer = SD3Transformer2DModel.load_config(source, subfolder="transformer", local_files_only=True)
                return int(transformer["sample_size"]) * factor
            native = vae["sample_size"]
            return int(native[0] if isinstance(native, list) else native)
        except Exception:
            return 64 if source == str(WEIGHTS_DIR / TINY_MODEL) else 512  # the render will report a missing model

    def image_prompt_method(self, model: str | None = None) -> ImagePromptMethod:
        if self.ip_adapter is not None and (model or self._default) == self._default:
            return ImagePromptMethod.IP_ADAPTER
        return ImagePromptMethod.IMAGE_TO_IMAGE

    async def render(self, request: RenderRequest, *, progress: ProgressCallback | None = None) -> RenderResult:
        model = request.model or self._default
        model = self._by_source.get(model, model)  # a job recorded before its model had a short name
        if model not in self._models:
            raise RenderError(f"model {model!r} is not installed (installed: {', '.join(self._models)})")
        if request.action not in _ACTIONS:
            raise RenderError(f"unknown action {request.action!r}")
        try:
            _ACTIONS[request.action][1](request)
        except ValueError as e:
            raise RenderError(str(e)) from None
        reason = refusal(self, dataclasses.replace(request, model=model))  # actions, features and sizes
        if reason is not None:
            raise RenderError(reason)
        if self._thread is None or self._closed:
            raise RenderError("the engine is not running")
        loop = asyncio.get_running_loop()
        job = _Job(request, model, request.batch_key(model), loop, loop.create_future(), progress, time.monotonic())
        with self._cond:
            self._pending.append(job)
            self._cond.notify_all()
        try:
            # shield: cancelling the caller must not cancel the future the worker resolves.
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.cancelled.set()  # the worker stops this render at the next step
            with self._cond:
                self._cond.notify_all()
            raise

    async def tune(self, request: TuneRequest, *, progress: ProgressCallback | None = None) -> TuneResult:
        """Train a LoRA on a thread of its own, so renders go on meanwhile (on a copy of the UNet)."""
        from engine.tune import TuneCancelled, TuneSettings, train_lora

        name = request.model or self._default
        name = self._by_source.get(name, name)
        if name not in self._models:
            raise RenderError(f"model {name!r} is not installed")
        reason = self.family(name).supports(Action.TUNE)
        if reason is not None:
            raise RenderError(reason)
        if self._closed:
            raise RenderError("the engine is shutting down")
        loop = asyncio.get_running_loop()
        stop = threading.Event()

        def on_step(done: int, total: int) -> bool:
            if progress is not None:
                with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting
                    loop.call_soon_threadsafe(progress, RenderProgress(done, total))
            return not stop.is_set() and not self._closed

        def run() -> TuneResult:
            started = time.perf_counter()
            # What each picture shows, in the describer's words: the LoRA then learns what they share beyond it.
            captions = [self._describe(DescribeRequest(image=p, count=1)).prompts[:1] for p in request.pictures]
            with self._tune_lock:
                pipe = self._model(name).text2img
                try:
                    output = train_lora(
                        pipe,
                        request.pictures,
                        request.output,
                        checkpoint=request.checkpoint,
                        settings=TuneSettings(steps=request.steps, seed=request.seed),
                        captions=[found[0] if found else "" for found in captions],
                        on_step=on_step,
                    )
                except TuneCancelled:
                    raise asyncio.CancelledError from None
                except ValueError as e:
                    raise RenderError(str(e)) from None
            return TuneResult(str(output), name, time.perf_counter() - started)

        running = asyncio.ensure_future(asyncio.to_thread(run))
        try:
            return await asyncio.shield(running)
        except asyncio.CancelledError:
            stop.set()  # the thread stops at its next step; its checkpoint stays
            raise

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        if self._closed:
            raise RenderError("the engine is shutting down")
        # Its own small model and lock, in a thread: a describe (~0.1 s) never waits behind a batch of renders.
        return await asyncio.to_thread(self._describe, request)

    def _describe(self, request: DescribeRequest) -> DescribeResult:
        started = time.perf_counter()
        with self._describer_lock:
            if self._describer is None:
                # A GPU runs it in the engine's dtype; float16 on a CPU would only be slower.
                dtype = self.dtype if self.device.type == "cuda" else torch.float32
                try:
                    self._describer = Describer.load(self._describer_name, device=self.device, dtype=dtype)
                except DescriberError as e:
                    raise RenderError(str(e)) from e
                log.info("loaded describer %s on %s", self._describer_name, self.device)
            if not self._describer.knows(request.image):  # far outside what it knows: say so, don't guess
                return DescribeResult((), self._describer_name, time.perf_counter() - started, unfamiliar=True)
            try:
                prompts = self._describer.describe(
                    request.image, count=request.count, seed=request.seed, avoid=request.avoid
                )
            except ValueError as e:
                raise RenderError(str(e)) from None
        return DescribeResult(tuple(prompts), self._describer_name, time.perf_counter() - started)

    # -- loading (worker thread, or before it starts) ------------------------------------------

    def _model(self, name: str) -> _Model:
        with self._loaded_lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return self._loaded[name]
        # Make room first, so two models never have to fit at once when one is the limit.
        while len(self._loaded) >= self.max_loaded_models:
            self._evict_oldest()
        model = self._load(name)
        with self._loaded_lock:
            self._loaded[name] = model
        if self.memory_budget_gb is not None:
            while len(self._loaded) > 1 and self._memory_used_gb() > self.memory_budget_gb:
                self._evict_oldest()
        return model

    def _memory_used_gb(self) -> float:
        """What the budget counts: the GPU's allocated memory, or with offloading (or on a CPU) the
        loaded models' weights wherever they sit."""
        if self.device.type == "cuda" and not self.memory.offloads:
            return torch.cuda.memory_allocated(self.device) / 1e9
        with self._loaded_lock:
            pipes = [m.text2img for m in self._loaded.values()]
        return sum(weights_gb(pipe) for pipe in pipes)

    def _evict_oldest(self) -> None:
        with self._loaded_lock:
            name, model = self._loaded.popitem(last=False)
        del model
        started = time.perf_counter()
        gc.collect()  # pipelines hold reference cycles; free their tensors now, not at some later collection
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        _release_freed_heap()
        log.info("unloaded model %s (least recently used) in %.2f s", name, time.perf_counter() - started)

    def _check_installed(self, name: str) -> None:
        """A diffusers folder, a model in the local Hugging Face cache or a .safetensors file of a family
        dreamgrid renders; RenderError naming it if not."""
        source = self._sources.get(name, name)
        if name in self._preloaded or source == TINY_MODEL:
            return
        # ModelSourceError (a RenderError): missing, pickled, or of no family here. A model that is there
        # but broken fails its renders instead: startup need not fail for one bad model.
        with contextlib.suppress(_Unreadable):
            self.family(name)

    def _load(self, name: str) -> _Model:
        from diffusers import AutoPipelineForImage2Image

        started = time.perf_counter()
        if name in self._preloaded:
            pipe = self._preloaded[name]
        else:
            source: str | Path = self._sources.get(name, name)
            if source == TINY_MODEL:
                source = WEIGHTS_DIR / TINY_MODEL
                if not (source / "model_index.json").exists():
                    from engine.tiny import build_tiny_pipeline

                    log.warning("%s not found; using a tiny model with RANDOM weights built from config", source)
                    pipe = build_tiny_pipeline()
                    source = ""
            if source != "":
                try:
                    pipe = load_pipeline(
                        source,
                        dtype=self.dtype,
                        safety_checker=self.safety_checker,
                        single_file_configs=self._single_file_configs,
                    )
                except ModelSourceError:
                    raise
                except Exception as e:
                    # The reason can hold the server's paths: the operator reads it in the log, members don't.
                    log.exception("could not load model %r (%s)", name, source)
                    where = str(source)
                    shown = Path(where).name if Path(where).is_absolute() or where.startswith(".") else where
                    raise RenderError(f"could not load model {shown!r}; the bot's operator has been told") from e
        family = of_pipeline(pipe)
        for component in pipe.components.values():
            if isinstance(component, torch.nn.Module):
                component.eval()  # a pipeline built from config is in training mode: T5's dropout would be on
        if name in self._schedulers:
            import diffusers

            scheduler_class = getattr(diffusers, self._schedulers[name], None)
            if not isinstance(scheduler_class, type) or not hasattr(scheduler_class, "from_config"):
                raise RenderError(f"model {name!r}: {self._schedulers[name]!r} is not a diffusers scheduler")
            pipe.scheduler = scheduler_class.from_config(pipe.scheduler.config)
        for attr in ("tokenizer", "tokenizer_2", "tokenizer_3"):
            tokenizer = getattr(pipe, attr, None)
            if tokenizer is not None and tokenizer.model_max_length > 10_000:
                # A bare tokenizer folder says 1e30 and the pipeline pads to it: CLIP reads 77, T5 512.
                tokenizer.model_max_length = 77 if "CLIP" in type(tokenizer).__name__ else 512
        if self.safety_checker and getattr(pipe, "safety_checker", None) is None:
            log.warning("safety checker requested but model %r has none; images are not checked", name)
        if not self.safety_checker and hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        place(pipe, self.device, self.dtype, self.memory, family.denoiser(pipe))
        loras = LoraSet(pipe) if family.lora else None
        prepare_pipeline(pipe, self.speedups)
        pipe.set_progress_bar_config(disable=True)
        ip_adapter = None
        if self.ip_adapter is not None and name == self._default:
            if not family.ip_adapter:
                raise RenderError(f"IP_ADAPTER is set, but {family.name} models cannot load that kind of IP-Adapter")
            try:
                ip_adapter = image_prompt_action.load_ip_adapter(pipe, self.ip_adapter, self.ip_adapter_weight)
            except Exception as e:
                raise RenderError(f"could not load the IP-Adapter in {self.ip_adapter}: {e}") from e
            log.info("loaded IP-Adapter %s for image prompts on %s", ip_adapter.weight_name, name)
        img2img = AutoPipelineForImage2Image.from_pipe(pipe)
        img2img.set_progress_bar_config(disable=True)
        self._safety_checkers[name] = getattr(pipe, "safety_checker", None) is not None
        inpaint = self._inpaint_pipeline(name, pipe, family)
        latent_rgb = fit_latent_rgb(pipe.vae)
        log.info(
            "loaded model %s (%s) on %s/%s in %.1f s",
            name,
            family.name,
            self.device,
            self.dtype,
            time.perf_counter() - started,
        )
        if self.speedups.compile != "off" and family.supports(Action.IMAGINE) is None:
            sizes = self.warm_up_sizes or aspect_buckets(family.native_size(pipe), multiple=family.size_multiple)
            log.info(
                "compiling model %s (%s) for its %d tile sizes; members wait until this is done",
                name,
                self.speedups.compile,
                len(sizes),
            )
            log.info("compiled model %s in %.1f s", name, warm_up(pipe, sizes))
        return _Model(name, family, pipe, img2img, inpaint, latent_rgb, ip_adapter, loras)

    def _inpaint_pipeline(self, name: str, pipe: Any, family: Family) -> Any:
        """The inpainting pipeline on the loaded weights; only a configured 9-channel UNet is extra."""
        from diffusers import AutoPipelineForInpainting, UNet2DConditionModel

        if family.supports(Action.INPAINT) and family.supports(Action.OUTPAINT):
            return None  # the family has no inpainting pipeline; supports() refuses both actions
        extra: dict[str, Any] = {}
        if name in self._inpaint_unets:
            if family.denoiser_name != "unet":
                raise RenderError(f"INPAINT_MODEL is a UNet, but {name!r} is a {family.name} model")
            source = self._inpaint_unets[name]
            try:
                unet = UNet2DConditionModel.from_pretrained(
                    source, subfolder="unet", dtype=self.dtype, local_files_only=True
                )
            except Exception as e:
                raise RenderError(f"could not load the inpainting UNet of {name!r} from {source!r}: {e}") from e
            if unet.config.in_channels != 9:
                raise RenderError(
                    f"the inpainting UNet for {name!r} ({source}) has {unet.config.in_channels} input channels, "
                    "not 9: it is not an inpainting model"
                )
            extra["unet"] = unet.to(self.device)
        if family.inpaint_pipeline is not None:
            import diffusers

            inpaint = getattr(diffusers, family.inpaint_pipeline).from_pipe(pipe, **extra)
        else:
            inpaint = AutoPipelineForInpainting.from_pipe(pipe, **extra)
        inpaint.set_progress_bar_config(disable=True)
        return inpaint

    # -- the worker ---------------------------------------------------------------------------

    def _take_batch(self) -> list[_Job] | None:
        """Block until there is work; return the oldest job plus compatible ones (None: closed)."""
        with self._cond:
            while True:
                while self._pending and self._pending[0].cancelled.is_set():
                    job = self._pending.popleft()
                    job.post(job.resolve, None, asyncio.CancelledError())
                if self._pending:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            first = self._pending[0]
            typical = self._render_s.get(first.key)
            window = self.batch_window_s if typical is None else min(self.batch_window_s, BATCH_WAIT_FRACTION * typical)
            deadline = first.arrived + window
            while True:
                batch: list[_Job] = []
                images = 0
                for job in self._pending:
                    if job.key == first.key and not job.cancelled.is_set():
                        if batch and images + len(job.request.seeds) > self.max_batch:
                            break
                        batch.append(job)
                        images += len(job.request.seeds)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or images >= self.max_batch or self._closed or first.cancelled.is_set():
                    break
                self._cond.wait(remaining)
            if self._closed:
                return None  # __aexit__ already failed every pending job
            for job in batch:
                self._pending.remove(job)
            return batch

    def _worker(self) -> None:
        while True:
            batch = self._take_batch()
            if batch is None:
                return
            if batch:
                self._run(batch)

    def _run(self, batch: list[_Job]) -> None:
        started = time.perf_counter()
        requests = [job.request for job in batch]
        first = batch[0]
        if self.speedups.pads_batches:
            requests += self._filler(requests)
        if first.request.action is Action.ANIMATE:
            self._run_clips(batch)
            return
        try:
            model = self._model(first.model)
            render, _, pipeline = _ACTIONS[first.request.action]
            pipe = getattr(model, pipeline(first.request))
            if model.loras is not None:  # every request in a batch has the same LoRAs at the same weights
                model.loras.apply(first.request.loras)
            elif first.request.loras:
                raise RenderError(model.family.lora_refusal() or "this model takes no LoRA")
            on_step = self._step_callback(batch, model)
            check = self.safety_checker and any(r.safety_check for r in requests)
            steered_by_pictures = first.request.action in (Action.IMAGE_PROMPT, Action.BLEND)
            extra = {"ip_adapter": model.ip_adapter} if steered_by_pictures else {}
            images = render(pipe, requests, on_step=on_step, safety_checker=check, **extra)
        except RenderInterrupted:
            for job in batch:
                job.post(job.resolve, None, asyncio.CancelledError())
            return
        except Exception as e:
            error = self._user_error(e)
            for job in batch:
                job.post(job.resolve, None, error)
            return
        elapsed = time.perf_counter() - started
        previous = self._render_s.get(first.key)
        self._render_s[first.key] = elapsed if previous is None else 0.7 * previous + 0.3 * elapsed
        self.stats.batches += 1
        self.stats.requests += len(batch)
        self.stats.images += sum(len(job.request.seeds) for job in batch)
        self.stats.batch_sizes.append(len(batch))
        total_images = sum(len(job.request.seeds) for job in batch)  # filler rows are shared overhead
        for job, tiles in zip(batch, images[: len(batch)], strict=True):
            flagged = tuple(bool(t.info.pop(FLAGGED, False)) for t in tiles) if job.request.safety_check else ()
            # Each request is charged its share of the batch's device time, by images.
            share = elapsed * len(job.request.seeds) / total_images
            result = RenderResult(
                images=tuple(tiles),
                seeds=job.request.seeds,
                model=job.model,
                elapsed_s=share,
                flagged=flagged,
                batch_size=len(batch),
            )
            job.post(job.resolve, result, None)

    def _video_for(self, name: str) -> VideoModel:
        """The video model for clips of `name`: the operator's (loaded once), or the shipped motion model."""
        if self._video_preloaded is not None or self.video.source:
            if self._video is None:
                self._video = load_video_pipeline(
                    self.video, device=self.device, dtype=self.dtype, preloaded=self._video_preloaded
                )
            return self._video
        model = self._model(name)
        if model.video is None:
            adapter = load_motion_adapter(model.text2img.unet)
            model.video = VideoModel(model.text2img, MOTION, adapter, model.latent_rgb)
        return model.video

    def _run_clips(self, batch: list[_Job]) -> None:
        """Each request's clip in turn: a clip is one pipeline call of its own (its frames are the batch)."""
        for job in batch:
            if job.cancelled.is_set():
                job.post(job.resolve, None, asyncio.CancelledError())
                continue
            started = time.perf_counter()
            request = job.request
            if request.frames == 0 and self.video.frames:
                request = dataclasses.replace(request, frames=self.video.frames)

            def report(step: int, total: int, preview: Image.Image | None, job: _Job = job) -> bool:
                if job.cancelled.is_set():
                    return True
                job.post(job.deliver, RenderProgress(step, total, preview if job.request.preview else None))
                return False

            try:
                video = self._video_for(job.model)
                frames = animate_action.animate(video, request, report)
            except RenderInterrupted:
                job.post(job.resolve, None, asyncio.CancelledError())
                continue
            except Exception as e:
                job.post(job.resolve, None, self._user_error(e))
                continue
            self.stats.batches += 1
            self.stats.requests += 1
            self.stats.images += len(frames)
            self.stats.batch_sizes.append(1)
            result = RenderResult(
                images=(frames[0],),
                seeds=request.seeds,
                model=job.model,
                elapsed_s=time.perf_counter() - started,
                clips=(tuple(frames),),
                fps=video.family.fps,
            )
            job.post(job.resolve, result, None)

    def _filler(self, requests: list[RenderRequest]) -> list[RenderRequest]:
        """Throw-away one-image requests that round the batch up to a size a compiled graph exists for."""
        images = sum(len(r.seeds) for r in requests)
        spare = padded_image_count(images, self.max_batch) - images
        filler = dataclasses.replace(requests[0], seeds=requests[0].seeds[:1], preview=False, safety_check=False)
        return [filler] * spare

    def _step_callback(self, batch: list[_Job], model: _Model) -> Callable[[int, int, torch.Tensor], bool]:
        offsets, row = [], 0
        for job in batch:
            offsets.append((row, row + len(job.request.seeds)))
            row += len(job.request.seeds)

        def on_step(step: int, total: int, latents: torch.Tensor) -> bool:
            live = False
            for job, (a, b) in zip(batch, offsets, strict=True):
                if job.cancelled.is_set():
                    continue
                live = True
                if job.progress is not None:
                    preview: Image.Image | None = None
                    if job.request.preview:
                        preview = preview_grid(latents[a:b], model.latent_rgb)
                    job.post(job.deliver, RenderProgress(step, total, preview))
            return not live  # interrupt only when every request in the batch was cancelled

        return on_step

    def _user_error(self, e: Exception) -> RenderError:
        if isinstance(e, RenderError):
            return e
        if isinstance(e, torch.OutOfMemoryError):
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            log.warning("out of memory: %s", e)
            return RenderError("the GPU ran out of memory; try a smaller size, fewer images or fewer steps")
        if isinstance(e, ValueError):
            return RenderError(str(e))
        log.exception("render failed")
        return RenderError(f"the render failed ({type(e).__name__}: {e})")
