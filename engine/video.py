"""The video model Animate draws on: the operator's image-to-video pipeline (`VIDEO_MODEL`: any
diffusers image-to-video folder: Wan 2.1/2.2, LTX-Video, CogVideoX, Stable Video Diffusion,
I2VGen-XL), or the shipped motion model on the shipped image model (engine/motion.py).

Which one, how long its clips are and whether it can end on a given picture are read from config
files (`model_index.json`), never by loading weights: the bot asks before it queues.
"""

from __future__ import annotations

import inspect
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.loading import MemorySettings, ModelSourceError, place

log = logging.getLogger(__name__)

MOTION_FOLDER = Path(__file__).parent / "weights" / "dreamgrid-motion"
CLIP_SECONDS = 5.0  # a clip's length when the model says nothing else (Midjourney's are 5 s)

NO_VIDEO_MODEL = (
    "Animate needs a video model, and this bot has none: its operator can set VIDEO_MODEL to a diffusers "
    "image-to-video folder (Wan 2.2, LTX-Video, CogVideoX)"
)


@dataclass(frozen=True, slots=True)
class VideoFamily:
    """What differs between image-to-video pipelines, by the prefix of their class name."""

    prefix: str
    name: str
    fps: float
    frame_multiple: int  # clips are 1 + k * frame_multiple frames long (the VAE's temporal compression)
    end_frame: bool  # the pipeline takes a last frame (`last_image`)
    max_frames: int | None = None  # the most frames one call draws (None: as many as asked)
    load_as: str | None = None  # a text-to-video folder whose weights its image-to-video pipeline reads


VIDEO_FAMILIES = (
    VideoFamily("WanImageToVideo", "Wan", fps=16, frame_multiple=4, end_frame=True),
    VideoFamily("LTXImageToVideo", "LTX-Video", fps=24, frame_multiple=8, end_frame=False),
    # Lightricks/LTX-Video's folder names LTXPipeline; the same weights draw from a picture.
    VideoFamily(
        "LTXPipeline", "LTX-Video", fps=24, frame_multiple=8, end_frame=False, load_as="LTXImageToVideoPipeline"
    ),
    VideoFamily("LTX2ImageToVideo", "LTX-2", fps=24, frame_multiple=8, end_frame=False),
    VideoFamily("CogVideoXImageToVideo", "CogVideoX", fps=8, frame_multiple=4, end_frame=False),
    VideoFamily("StableVideoDiffusion", "Stable Video Diffusion", fps=7, frame_multiple=1, end_frame=False),
    VideoFamily("I2VGenXL", "I2VGen-XL", fps=8, frame_multiple=1, end_frame=False),
)
# The shipped motion model: AnimateDiff-style modules in the shipped UNet, 8 frames a second.
MOTION = VideoFamily("dreamgrid-motion", "the shipped motion model", fps=8, frame_multiple=1, end_frame=True)
MOTION_FRAMES = 16  # what it was trained on (engine/training/motion.py); at 8 fps, 2 s


def family_of_class(class_name: str) -> VideoFamily | None:
    return next((f for f in VIDEO_FAMILIES if class_name.startswith(f.prefix)), None)


def family_of_source(source: str | Path) -> VideoFamily:
    """The family of a diffusers folder, from its model_index.json; ModelSourceError if it draws no clips."""
    index = Path(source) / "model_index.json"
    try:
        class_name = str(json.loads(index.read_text())["_class_name"])
    except (OSError, ValueError, KeyError):
        raise ModelSourceError(
            f"VIDEO_MODEL {Path(source).name!r} is not a diffusers folder with a model_index.json"
        ) from None
    family = family_of_class(class_name)
    if family is None:
        known = ", ".join(f.prefix for f in VIDEO_FAMILIES)
        raise ModelSourceError(f"VIDEO_MODEL is a {class_name}, not an image-to-video pipeline ({known})")
    return family


def clip_frames(family: VideoFamily, asked: int = 0) -> int:
    """Frames a clip is drawn with: `asked`, or CLIP_SECONDS of the family's rate, as 1 + k * multiple."""
    if family is MOTION:
        return min(asked or MOTION_FRAMES, MOTION_FRAMES * 2)
    wanted = asked or round(CLIP_SECONDS * family.fps)
    k = max(1, round((wanted - 1) / family.frame_multiple))
    frames = 1 + k * family.frame_multiple
    return min(frames, family.max_frames) if family.max_frames else frames


@dataclass(frozen=True, slots=True)
class VideoSettings:
    """VIDEO_MODEL and how it sits in memory: offloading as MEMORY_MODE says, and the VAE decoding
    the clip in tiles (`vae_tiling`) and one frame batch at a time (`vae_slicing`)."""

    source: str | None = None
    memory: MemorySettings = MemorySettings()
    vae_tiling: bool = True
    vae_slicing: bool = True
    frames: int = 0  # 0: CLIP_SECONDS of the model's rate


@dataclass
class VideoModel:
    """A loaded video model: its pipeline (the image model's, for the shipped motion model) and family."""

    pipe: Any
    family: VideoFamily
    adapter: Any = None  # the shipped motion model's MotionAdapter
    latent_rgb: Any = None  # the preview map of its VAE, when it has one we can fit

    def takes(self, name: str) -> bool:
        """Whether the pipeline's __call__ has a parameter `name`."""
        return name in inspect.signature(self.pipe.__call__).parameters


def load_video_pipeline(settings: VideoSettings, *, device: Any, dtype: Any, preloaded: Any = None) -> VideoModel:
    """The operator's image-to-video pipeline, placed as the settings say (`preloaded`: built already)."""
    if preloaded is not None:
        pipe = preloaded
    else:
        import diffusers

        assert settings.source is not None
        named = family_of_source(settings.source)
        pipeline_class = getattr(diffusers, named.load_as) if named.load_as else diffusers.DiffusionPipeline
        try:
            pipe = pipeline_class.from_pretrained(settings.source, dtype=dtype, local_files_only=True)
        except Exception as e:
            log.exception("could not load VIDEO_MODEL %s", settings.source)
            raise ModelSourceError(
                f"could not load the video model {Path(settings.source).name!r}; the bot's operator has been told"
            ) from e
    family = family_of_class(type(pipe).__name__)
    if family is None:
        raise ModelSourceError(f"VIDEO_MODEL is a {type(pipe).__name__}, not an image-to-video pipeline")
    for component in pipe.components.values():
        if hasattr(component, "eval"):
            component.eval()
    denoiser = getattr(pipe, "transformer", None) or getattr(pipe, "unet", None)
    place(pipe, device, dtype, settings.memory, denoiser)
    vae: Any = getattr(pipe, "vae", None)
    if settings.vae_tiling and hasattr(vae, "enable_tiling"):
        vae.enable_tiling()
    if settings.vae_slicing and hasattr(vae, "enable_slicing"):
        vae.enable_slicing()
    pipe.set_progress_bar_config(disable=True)
    log.info("loaded video model %s (%s) on %s", settings.source or type(pipe).__name__, family.name, device)
    return VideoModel(pipe, family)


def load_motion_adapter(unet: Any, folder: Path = MOTION_FOLDER) -> Any:
    """The shipped MotionAdapter for `unet`; ModelSourceError when it is missing or made for another UNet."""
    from diffusers.models.unets.unet_motion_model import MotionAdapter

    from engine.motion import fits

    if not (folder / "config.json").exists():
        raise ModelSourceError(NO_VIDEO_MODEL)
    adapter = MotionAdapter.from_pretrained(folder, local_files_only=True)
    if not fits(adapter, unet):
        raise ModelSourceError(
            "the shipped motion model was trained for another UNet: retrain it with `dreamgrid train-motion`"
        )
    return adapter.to(unet.device, unet.dtype).eval()
