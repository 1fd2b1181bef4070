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

from engine import params
from engine.requests import Action, RenderError, RenderProgress, RenderRequest

log = logging.getLogger(__name__)


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise _UsageError(message)


def _help(name: str) -> str:
    """A flag's help, from the table the Discord prompt parser uses too."""
    parameter = params.PARAMETER_BY_SPELLING[name]
    return f"{parameter.values} (default {parameter.default})".replace("%", "%%")


def _parser(model: str = "dreamgrid-tiny", device: str = "auto", dtype: str = "auto") -> argparse.ArgumentParser:
    p = _Parser(prog="dreamgrid imagine", description="Render a 2x2 grid from a prompt on this machine.")
    p.add_argument("prompt", help="what to draw")
    p.add_argument("-o", "--output", help="PNG path (default: out/<timestamp>-<slug>.png)")
    p.add_argument("--seed", type=int, help=_help("seed"))
    p.add_argument("--ar", default="1:1", help=_help("ar"))
    p.add_argument("--size", type=int, help="side of the square pixel budget per tile (default: the model's own)")
    p.add_argument("--q", type=float, default=params.QUALITY_DEFAULT, help=_help("quality"))
    p.add_argument("--steps", type=int, help="denoising steps (overrides --q)")
    p.add_argument("--s", "--stylize", dest="stylize", type=int, default=params.STYLIZE_DEFAULT, help=_help("stylize"))
    p.add_argument("--no", default="", help=_help("no"))
    p.add_argument("--chaos", type=int, default=params.CHAOS_DEFAULT, help=_help("chaos"))
    p.add_argument("--stop", type=int, default=params.STOP_DEFAULT, help=_help("stop"))
    p.add_argument("--tile", action="store_true", help=_help("tile"))
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


def _slug(prompt: str) -> str:
    return "-".join(re.findall(r"[a-z0-9]+", prompt.lower()))[:40].strip("-") or "image"


def _request(
    args: argparse.Namespace,
    native: int,
    base_steps: int = params.BASE_STEPS,
    guidance_scale: float | None = None,
    size_multiple: int = 8,
) -> RenderRequest:
    seed = args.seed if args.seed is not None else secrets.randbelow(params.SEED_MAX + 1)
    if not params.SEED_MIN <= seed <= params.SEED_MAX:
        raise ValueError(f"--seed must be between {params.SEED_MIN} and {params.SEED_MAX}, got {seed}")
    steps = args.steps if args.steps is not None else params.steps_for_quality(args.q, base=base_steps)
    params.steps_for_stop(steps, args.stop)  # validates --stop
    guidance = params.guidance_for_stylize(args.stylize)
    if guidance_scale is not None:  # GUIDANCE_SCALE is the guidance at the default --stylize, as in the bot
        guidance = round(guidance * guidance_scale / params.guidance_for_stylize(params.STYLIZE_DEFAULT), 3)
    common = dict(
        prompt=args.prompt,
        steps=steps,
        guidance_scale=guidance,
        negative_prompt=args.no,
        model=args.model,
        chaos=args.chaos,
        stop=args.stop,
        tile=args.tile,
    )
    source = args.variation or args.upscale
    if source is None:
        if args.strength:
            raise ValueError("--strength applies to --variation or --upscale")
        w, h = params.parse_aspect(args.ar)
        budget = args.size or native
        width, height = params.size_for_aspect(w, h, budget * budget, multiple=max(8, native // 8, size_multiple))
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
    """Check the pure parameters before loading a model (fast, one clear line)."""
    params.parse_aspect(args.ar)
    steps = args.steps if args.steps is not None else params.steps_for_quality(args.q)
    if not 1 <= steps <= params.MAX_STEPS:
        raise ValueError(f"--steps must be between 1 and {params.MAX_STEPS}, got {steps}")
    params.steps_for_stop(steps, args.stop)
    params.guidance_for_stylize(args.stylize)
    if not params.CHAOS_MIN <= args.chaos <= params.CHAOS_MAX:
        raise ValueError(f"--chaos must be between {params.CHAOS_MIN} and {params.CHAOS_MAX}, got {args.chaos}")
    if args.seed is not None and not params.SEED_MIN <= args.seed <= params.SEED_MAX:
        raise ValueError(f"--seed must be between {params.SEED_MIN} and {params.SEED_MAX}, got {args.seed}")
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
