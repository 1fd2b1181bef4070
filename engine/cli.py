"""`dreamgrid imagine`: render a grid (or a variation / upscale) from the command line.

    dreamgrid imagine "a red circle" --seed 1 -o a.png --ar 3:2
    dreamgrid imagine "a red circle" --seed 1 --variation tile.png --strength subtle
    dreamgrid imagine "a red circle" --seed 1 --upscale tile.png

Tile 1 of a grid uses seed N and the others seeds mixed from it (`engine.params.tile_seeds`), as in
Discord, so the same arguments give byte-identical PNG files.
Prints the output path on stdout; progress goes to stderr; bad input is one line and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import secrets
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine import params
from engine.requests import Action, RenderError, RenderProgress, RenderRequest

log = logging.getLogger(__name__)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _help(parameter: params.PromptParameter) -> str:
    """A flag's help, from the table the Discord prompt parser uses too."""
    return f"{parameter.values} (default {parameter.default})".replace("%", "%%")


def _parser(model: str = "dreamgrid-tiny", device: str = "auto", dtype: str = "auto") -> argparse.ArgumentParser:
    p = _Parser(prog="dreamgrid imagine", description="Render a 2x2 grid from a prompt on this machine.")
    p.add_argument("prompt", help="what to draw")
    p.add_argument("-o", "--output", help="PNG path (default: out/<timestamp>-<slug>.png)")
    # The prompt parameters, as in Discord: read by the same `PromptParameter.read`, so the same
    # values are accepted and refused in the same words.
    for parameter in params.PARAMETERS:
        if not parameter.cli or parameter.type is params.ValueType.NAME:  # --model: an id or folder, below
            continue
        spellings = [f"--{spelling}" for spelling in (parameter.name, *parameter.aliases)]
        if parameter.flag:
            p.add_argument(*spellings, dest=parameter.name, action="store_true", help=_help(parameter))
        else:
            metavar = parameter.usage.split(" ", 1)[1]
            p.add_argument(*spellings, dest=parameter.name, metavar=metavar, help=_help(parameter))
    p.add_argument("--size", type=int, help="side of the square pixel budget per tile (default: the model's own)")
    p.add_argument("--steps", type=int, help="denoising steps (overrides --quality)")
    p.add_argument("--model", default=model, help="model id or diffusers folder (default: %(default)s)")
    p.add_argument("--device", default=device, help="auto, cpu or cuda (default: %(default)s)")
    p.add_argument("--dtype", default=dtype, help="auto, float32, float16 or bfloat16 (default: %(default)s)")
    source = p.add_mutually_exclusive_group()
    source.add_argument("--variation", metavar="TILE", help="make four variations of this image")
    source.add_argument("--upscale", metavar="TILE", help="upscale this image 2x")
    p.add_argument(
        "--strength",
        choices=("strong", "subtle", "creative"),
        help="variation: strong (default) or subtle; upscale: subtle (default) or creative",
    )
    return p


def _values(args: argparse.Namespace) -> dict[str, Any]:
    """The prompt parameters given as flags, read as the bot reads them; those not given are left out."""
    values: dict[str, Any] = {}
    for parameter in params.PARAMETERS:
        if not parameter.cli or parameter.type is params.ValueType.NAME:
            continue
        given = getattr(args, parameter.name, None)
        if given is None or given is False:
            continue
        values[parameter.name] = True if given is True else parameter.read(given)
    return values


def _slug(prompt: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].strip("-") or "image"


def _request(
    args: argparse.Namespace,
    native: int,
    base_steps: int = params.BASE_STEPS,
    guidance_scale: float | None = None,
    size_multiple: int = 8,
) -> RenderRequest:
    values = _values(args)
    seed = values.get("seed", secrets.randbelow(params.SEED_MAX + 1))
    fields = params.request_fields(
        values,
        native=native,
        base_steps=base_steps,
        base_guidance=guidance_scale,
        size=args.size,
        size_multiple=size_multiple,  # the model's family may draw coarser sizes (Flux: multiples of 16 px)
    )
    if args.steps is not None:
        fields["steps"] = args.steps
    width, height = fields.pop("width"), fields.pop("height")
    common = dict(prompt=args.prompt, model=args.model, **fields)
    source = args.variation or args.upscale
    if source is None:
        if args.strength:
            raise ValueError("--strength applies to --variation or --upscale")
        seeds = params.tile_seeds(seed)
        return RenderRequest(action=Action.IMAGINE, seeds=seeds, width=width, height=height, **common)
    from PIL import Image

    try:
        with Image.open(source) as im:
            image = im.convert("RGB")
    except OSError as e:
        raise ValueError(f"cannot read image {source!r}: {e}") from None
    if args.variation:
        strengths = {"strong": params.VARY_STRONG, "subtle": params.VARY_SUBTLE}
        choice = args.strength or "strong"
        action, seeds = Action.VARIATION, params.tile_seeds(seed)
    else:
        strengths = {"subtle": params.UPSCALE_SUBTLE, "creative": params.UPSCALE_CREATIVE}
        choice = args.strength or "subtle"
        action, seeds = Action.UPSCALE, (seed,)
    if choice not in strengths:
        raise ValueError(f"--strength {choice} does not apply here; choose {' or '.join(strengths)}")
    strength = strengths[choice]
    minimum = params.UPSCALE_MIN_STEPS if action is Action.UPSCALE else 2
    common["steps"] = params.img2img_steps(common["steps"], strength, minimum=minimum)
    return RenderRequest(
        action=action,
        seeds=seeds,
        width=image.width,
        height=image.height,
        init_image=image,
        strength=strength,
        **common,
    )


def _validate(args: argparse.Namespace) -> None:
    """Check the parameters before loading a model (fast, one clear line)."""
    values = _values(args)
    steps = (
        args.steps
        if args.steps is not None
        else params.steps_for_quality(values.get("quality", params.QUALITY_DEFAULT))
    )
    if not 1 <= steps <= params.MAX_STEPS:
        raise ValueError(f"--steps must be between 1 and {params.MAX_STEPS}, got {steps}")
    params.steps_for_stop(steps, values.get("stop", params.STOP_DEFAULT))
    if args.size is not None and args.size <= 0:
        raise ValueError(f"--size must be positive, got {args.size}")
    for path in (args.variation, args.upscale):
        if path is not None and not Path(path).is_file():
            raise ValueError(f"no such image: {path}")


@dataclass(frozen=True, slots=True)
class Installed:
    """The operator's models: short names, where each is loaded from, and scheduler overrides."""

    models: list[str]
    sources: dict[str, str]
    schedulers: dict[str, str]


@dataclass(frozen=True, slots=True)
class Defaults:
    """Steps and guidance at --q 1 / --stylize 100: MODEL_DEFAULTS' (`model_*`), else the model family's
    (a few-step model's own), else the bot's STEPS and GUIDANCE_SCALE."""

    base_steps: int = params.BASE_STEPS
    guidance_scale: float | None = None
    model_steps: int | None = None
    model_guidance: float | None = None


async def _render(args: argparse.Namespace, installed: Installed, defaults: Defaults) -> Path:
    from tqdm import tqdm

    from engine.core import DiffusersEngine

    async with DiffusersEngine(
        model=args.model,
        models=[args.model, *(m for m in installed.models if m != args.model)],
        sources=installed.sources,
        schedulers=installed.schedulers,
        device=args.device,
        dtype=args.dtype,
        batch_window_s=0.0,
    ) as engine:
        family = engine.defaults(args.model)
        steps = defaults.model_steps or family.steps or defaults.base_steps
        guidance = next(
            (g for g in (defaults.model_guidance, family.guidance_scale, defaults.guidance_scale) if g is not None),
            None,
        )
        multiple = engine.family(args.model).size_multiple  # Flux draws multiples of 16 px
        request = _request(args, engine.native_size(args.model), steps, guidance, multiple)
        with tqdm(total=request.steps, file=sys.stderr, desc=request.action.value, leave=False) as bar:

            def progress(event: RenderProgress) -> None:
                bar.total = event.total
                bar.n = event.step
                bar.refresh()

            result = await engine.render(request, progress=progress)
    print(f"seeds {', '.join(map(str, result.seeds))} in {result.elapsed_s:.2f} s", file=sys.stderr)
    default = Path("out") / f"{time.strftime('%Y%m%d-%H%M%S')}-{_slug(args.prompt)}.png"
    path = Path(args.output) if args.output else default
    path.parent.mkdir(parents=True, exist_ok=True)
    result.grid.save(path, format="PNG")
    return path


def imagine_main(
    argv: list[str] | None = None,
    *,
    model: str = "dreamgrid-tiny",
    models: list[str] | None = None,
    sources: dict[str, str] | None = None,
    schedulers: dict[str, str] | None = None,
    device: str = "auto",
    dtype: str = "auto",
    base_steps: int = params.BASE_STEPS,
    guidance_scale: float | None = None,
    size: int | None = None,
    model_steps: int | None = None,
    model_guidance: float | None = None,
) -> int:
    """`dreamgrid imagine`; the keyword arguments are the operator's settings (`dreamgrid` passes MODEL, …)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        args = _parser(model, device, dtype).parse_args(argv)
        _validate(args)
        if size is not None and args.size is None:
            args.size = size
        installed = Installed(list(models or []), dict(sources or {}), dict(schedulers or {}))
        defaults = Defaults(base_steps, guidance_scale, model_steps, model_guidance)
        path = asyncio.run(_render(args, installed, defaults))
    except _UsageError as e:
        print(f"dreamgrid imagine: error: {e}", file=sys.stderr)
        return 2
    except (ValueError, RenderError) as e:
        print(f"dreamgrid imagine: error: {e}", file=sys.stderr)
        return 2 if isinstance(e, ValueError) else 1
    except KeyboardInterrupt:
        print("dreamgrid imagine: interrupted", file=sys.stderr)
        return 130
    print(path.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(imagine_main())
