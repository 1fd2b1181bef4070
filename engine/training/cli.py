"""Entry points for `dreamgrid train`, `dreamgrid eval`, `dreamgrid train-describer` and `dreamgrid eval-describer`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

from engine.argtypes import fraction, non_negative, positive, tile_size

SHIPPED_MODEL = "dreamgrid-tiny"
# Found from this file, not the working directory: `dreamgrid eval` works from any folder.
SHIPPED_FOLDER = Path(__file__).resolve().parents[1] / "weights" / SHIPPED_MODEL


def _model_folder(name: str | Path) -> Path:
    """The shipped model by its name (from any working directory), any other folder as given."""
    return SHIPPED_FOLDER if str(name) == SHIPPED_MODEL else Path(name)


def _not_a_folder(command: str, what: str, folder: str | Path, kind: str, marker: str) -> bool:
    """True, with one line on stderr in argparse's words, when `folder` lacks the file that makes it `kind`:
    the command stops before any work instead of in a traceback from deep inside the loader."""
    if (Path(folder) / marker).is_file():
        return False
    print(f"dreamgrid {command}: error: {what}{folder} is not {kind} (no {marker})", file=sys.stderr)
    return True


def _quiet() -> None:
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_main(argv: list[str] | None = None) -> int:
    _quiet()
    from .train import TrainConfig, train

    d = TrainConfig()
    p = argparse.ArgumentParser(prog="dreamgrid train", description="Train a small text-to-image model from scratch.")
    p.add_argument("--output", default=d.output, help="pipeline folder to write (default: %(default)s)")
    p.add_argument("--run-dir", default=d.run_dir, help="checkpoints, samples and the run report")
    p.add_argument("--data", default=None, help="folder of images with same-named .txt captions (default: synthetic)")
    p.add_argument("--num-images", type=positive(int), default=d.num_images, help="synthetic dataset size")
    p.add_argument("--image-size", type=tile_size, default=d.image_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--device", default=d.device, help="auto, cpu or cuda")
    p.add_argument("--threads", type=positive(int), default=None, help="torch CPU threads")
    p.add_argument("--vae", default=None, help="a trained AutoencoderKL folder to use instead of training one")
    p.add_argument(
        "--tune-decoder",
        action="store_true",
        help="with --vae: tune its decoder on this dataset's whole images (stage 1b)",
    )
    p.add_argument("--decoder-steps", type=non_negative(int), default=d.decoder_steps, help="stage 1b steps")
    p.add_argument("--vae-steps", type=non_negative(int), default=d.vae_steps)
    p.add_argument("--vae-batch", type=positive(int), default=d.vae_batch)
    p.add_argument("--steps", type=non_negative(int), default=d.steps, help="UNet + text encoder steps")
    p.add_argument("--batch", type=positive(int), default=d.batch)
    p.add_argument("--lr", type=positive(float), default=d.lr)
    p.add_argument("--text-lr", type=positive(float), default=d.text_lr)
    p.add_argument("--caption-dropout", type=fraction, default=d.caption_dropout)
    p.add_argument(
        "--timesteps", choices=("uniform", "importance"), default=d.timesteps, help="how noise levels are drawn"
    )
    p.add_argument("--sample-every", type=positive(int), default=d.sample_every)
    p.add_argument("--checkpoint-every", type=positive(int), default=d.checkpoint_every)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from the run dir's checkpoint, with the VAE and latent cache it made (--vae is not read again)",
    )
    p.add_argument("--stop-after", type=positive(int), default=None, help="checkpoint and stop at this step")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if a.vae and _not_a_folder("train", "--vae ", a.vae, "an AutoencoderKL folder", "config.json"):
        return 2
    if a.tune_decoder and not a.vae:
        print(
            "dreamgrid train: error: --tune-decoder goes with --vae (without it, stage 1b runs anyway)", file=sys.stderr
        )
        return 2
    cfg = TrainConfig(
        output=a.output,
        run_dir=a.run_dir,
        data=a.data,
        num_images=a.num_images,
        image_size=a.image_size,
        seed=a.seed,
        device=a.device,
        threads=a.threads,
        vae=a.vae,
        tune_decoder=a.tune_decoder,
        decoder_steps=a.decoder_steps,
        vae_steps=a.vae_steps,
        vae_batch=a.vae_batch,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        text_lr=a.text_lr,
        caption_dropout=a.caption_dropout,
        timesteps=a.timesteps,
        sample_every=a.sample_every,
        checkpoint_every=a.checkpoint_every,
        resume=a.resume,
        stop_after=a.stop_after,
        progress=not a.no_progress,
    )
    start = time.perf_counter()
    report = train(cfg)
    print(json.dumps({k: v for k, v in report.items() if k != "config"}, indent=2, default=str))
    print(f"wrote {cfg.output} in {time.perf_counter() - start:.0f} s")
    return 0


def eval_main(argv: list[str] | None = None) -> int:
    _quiet()
    from .evaluate import CASE_SETS, CHANCE, DEFAULT_GUIDANCE, DEFAULT_SIZE, DEFAULT_STEPS, TARGETS, evaluate

    p = argparse.ArgumentParser(prog="dreamgrid eval", description="Judge a model on held-out prompts from pixels.")
    p.add_argument(
        "model", nargs="?", default=SHIPPED_MODEL, help="a diffusers folder (default: the model dreamgrid ships)"
    )
    p.add_argument("--seeds", type=positive(int), default=4, help="seeds per prompt (24 prompts)")
    p.add_argument(
        "--cases",
        choices=CASE_SETS,
        default=CASE_SETS[0],
        help="held-out triples (default), the same prompts at fresh seeds, or trained triples",
    )
    p.add_argument("--steps", type=positive(int), default=DEFAULT_STEPS)
    p.add_argument("--guidance", type=non_negative(float), default=DEFAULT_GUIDANCE)
    p.add_argument("--size", type=tile_size, default=DEFAULT_SIZE)
    p.add_argument("--grid", default=None, help="save the first 64 images as a PNG grid")
    p.add_argument("--threads", type=positive(int), default=None)
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    model = _model_folder(a.model)
    if _not_a_folder("eval", "", model, "a diffusers folder", "model_index.json"):
        return 2
    r = evaluate(str(model), a.seeds, a.steps, a.guidance, a.size, a.grid, a.cases)
    print(f"{r['cases']} {a.cases} cases, {a.size}px, {a.steps} steps, guidance {a.guidance}: {r['seconds']:.1f} s")
    ok = True
    for k in ("background", "foreground", "shape"):
        target = TARGETS[a.cases][k]
        met = r[k] >= target
        ok &= met
        print(f"  {k:<10} {r[k]:6.1%}   chance {CHANCE[k]:5.1%}   target {target:.0%} {'ok' if met else 'MISSED'}")
    print(f"  (background: the {r['cases_naming_background']} cases whose prompt names one)")
    return 0 if ok else 1


def train_describer_main(argv: list[str] | None = None) -> int:
    _quiet()
    from .describer import DescriberConfig, train_describer

    d = DescriberConfig()
    p = argparse.ArgumentParser(
        prog="dreamgrid train-describer", description="Train the small image-to-text model behind /describe."
    )
    p.add_argument("--output", default=d.output, help="model folder to write (default: %(default)s)")
    p.add_argument("--num-images", type=positive(int), default=d.num_images, help="synthetic dataset size")
    p.add_argument("--steps", type=positive(int), default=d.steps)
    p.add_argument("--batch", type=positive(int), default=d.batch)
    p.add_argument("--lr", type=positive(float), default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=positive(int), default=None, help="torch CPU threads")
    p.add_argument("--no-progress", action="store_true")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = DescriberConfig(
        output=a.output,
        num_images=a.num_images,
        steps=a.steps,
        batch=a.batch,
        lr=a.lr,
        seed=a.seed,
        threads=a.threads,
        progress=not a.no_progress,
    )
    report = train_describer(cfg)
    print(json.dumps({k: v for k, v in report.items() if k != "config"} | {"times": cfg.times}, indent=2))
    print(f"wrote {cfg.output} in {cfg.times['total_s']:.0f} s")
    return 0


def eval_describer_main(argv: list[str] | None = None) -> int:
    _quiet()
    from engine.describe import DescriberError

    from .describer import DESCRIBER_TARGETS, evaluate_describer

    p = argparse.ArgumentParser(
        prog="dreamgrid eval-describer",
        description="Judge a describer on held-out synthetic images and on describe(imagine(prompt)).",
    )
    p.add_argument("describer", nargs="?", default=str(SHIPPED_FOLDER.parent / "dreamgrid-describer"))
    p.add_argument("--model", default=SHIPPED_MODEL, help="text-to-image model for the round trip")
    p.add_argument("--no-round-trip", action="store_true", help="only the held-out images")
    p.add_argument("--threads", type=positive(int), default=None)
    a = p.parse_args(argv)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    model = None if a.no_round_trip else _model_folder(a.model)
    if model and _not_a_folder("eval-describer", "--model ", model, "a diffusers folder", "model_index.json"):
        return 2
    try:
        r = evaluate_describer(a.describer, text_to_image=None if model is None else str(model))
    except DescriberError as e:
        print(f"dreamgrid eval-describer: error: {e}", file=sys.stderr)
        return 2
    ok = True
    parts = (
        ("held_out", "held-out images"),
        ("round_trip", "describe(imagine(prompt)), dreamgrid eval's held-out prompts"),
        ("round_trip_trained", "describe(imagine(prompt)), new prompts of triples dreamgrid-tiny saw"),
    )
    for part, title in parts:
        if part not in r:
            continue
        print(f"{title}: {r[part + '_cases']} cases, {r[part + '_s']:.1f} s")
        for k in ("shape", "foreground", "background", "all three"):
            target = DESCRIBER_TARGETS.get(part, {}).get(k)
            met = target is None or r[part][k] >= target
            ok &= met
            verdict = "" if target is None else f"   target {target:.0%} {'ok' if met else 'MISSED'}"
            print(f"  {k:<10} {r[part][k]:6.1%}{verdict}")
        if part + "_vs_pixels" in r:
            agree = r[part + "_vs_pixels"]
            shown = ", ".join(f"{k} {agree[k]:.1%}" for k in ("shape", "foreground", "background"))
            print(f"  agrees with the pixel judge on the same images: {shown}")
    print("example:", " | ".join(r["example"]["prompts"]))
    return 0 if ok else 1


def train_motion_main(argv: list[str] | None = None) -> int:
    _quiet()
    from .motion import MotionConfig, train_motion

    d = MotionConfig(model=SHIPPED_FOLDER, out=SHIPPED_FOLDER.parent / "dreamgrid-motion")
    p = argparse.ArgumentParser(
        prog="dreamgrid train-motion",
        description="Train the shipped motion model (Animate) for the shipped image model's UNet, from scratch.",
    )
    p.add_argument("--model", type=Path, default=d.model, help="the image model whose UNet it moves")
    p.add_argument("--output", type=Path, default=d.out, help="the MotionAdapter folder to write")
    p.add_argument("--steps", type=positive(int), default=d.steps)
    p.add_argument("--clips", type=positive(int), default=d.clips, help="synthetic clips drawn and encoded once")
    p.add_argument("--batch", type=positive(int), default=d.batch)
    p.add_argument("--lr", type=positive(float), default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=positive(int), default=d.threads, help="torch CPU threads (one: reproducible)")
    a = p.parse_args(argv)
    if _not_a_folder("train-motion", "--model ", a.model, "a diffusers folder", "model_index.json"):
        return 2
    cfg = MotionConfig(
        model=a.model,
        out=a.output,
        steps=a.steps,
        clips=a.clips,
        batch=a.batch,
        lr=a.lr,
        seed=a.seed,
        threads=a.threads,
    )
    print(json.dumps(train_motion(cfg), indent=2))
    print(f"wrote {cfg.out}")
    return 0


def eval_motion_main(argv: list[str] | None = None) -> int:
    _quiet()
    from engine.video import MOTION_FOLDER

    from .motion import eval_motion

    p = argparse.ArgumentParser(
        prog="dreamgrid eval-motion",
        description='Animate "red circle on a blue background" pictures and judge the clips from pixels.',
    )
    p.add_argument("--model", type=Path, default=SHIPPED_FOLDER)
    p.add_argument("--motion", type=Path, default=MOTION_FOLDER)
    p.add_argument("--clips", type=positive(int), default=8)
    a = p.parse_args(argv)
    if _not_a_folder("eval-motion", "--model ", a.model, "a diffusers folder", "model_index.json"):
        return 2
    if a.motion.resolve() != MOTION_FOLDER.resolve():  # the eval animates through the engine
        print(
            f"dreamgrid eval-motion: error: --motion must be {MOTION_FOLDER}, where the engine reads it",
            file=sys.stderr,
        )
        return 2
    report = eval_motion(a.model, a.motion, clips=a.clips)
    print(json.dumps(report, indent=2))
    return 0 if report["moved_and_kept"] * 2 >= report["clips"] and report["frames"] >= 16 else 1


COMMANDS = {
    "train": train_main,
    "train-motion": train_motion_main,
    "eval-motion": eval_motion_main,
    "eval": eval_main,
    "train-describer": train_describer_main,
    "eval-describer": eval_describer_main,
}


def main(argv: list[str] | None = None) -> int:
    """`python -m engine.training.cli train|eval|train-describer|eval-describer ...`, as `dreamgrid ...`."""
    args = sys.argv[1:] if argv is None else argv
    if args[:1] and args[0] in COMMANDS:
        return COMMANDS[args[0]](args[1:])
    return train_main(args)


if __name__ == "__main__":
    sys.exit(main())
