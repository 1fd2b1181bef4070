"""The shipped motion model: Animate works out of the box on the shipped model, judged from pixels."""

from __future__ import annotations

import json
from pathlib import Path

from engine.core import DiffusersEngine
from engine.requests import Action, RenderRequest
from engine.training.dataset import COLOURS
from engine.training.motion import track, unet_digest
from engine.video import MOTION_FOLDER

MODEL = Path(__file__).resolve().parents[2] / "engine" / "weights" / "dreamgrid-tiny"
PROMPT = "red circle on a blue background"


def test_the_motion_model_is_small_and_was_trained_for_the_shipped_unet():
    files = [p for p in MOTION_FOLDER.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 8 * 1024 * 1024
    report = json.loads((MOTION_FOLDER / "training_report.json").read_text())
    # Retrain with `dreamgrid train-motion` whenever the shipped UNet changes.
    assert report["trained_for_unet"] == unet_digest(MODEL)


async def test_animate_of_a_red_circle_keeps_its_colour_and_moves():
    """The issue's bar: a U image of a red circle on blue, animated, gives ≥ 16 frames in which the
    circle stays (most of its red pixels in every frame) and moves (its centre travels)."""
    async with DiffusersEngine(model="dreamgrid-tiny", device="cpu") as engine:
        assert engine.supports(None, Action.ANIMATE) is None
        grid = await engine.render(
            RenderRequest(action=Action.IMAGINE, prompt=PROMPT, seeds=(1,), width=64, height=64, steps=20)
        )
        clip = await engine.render(
            RenderRequest(
                action=Action.ANIMATE,
                prompt=PROMPT,
                seeds=(1,),
                width=64,
                height=64,
                steps=20,
                guidance_scale=5.0,
                strength=0.8,
                init_image=grid.images[0],
            )
        )
    frames = list(clip.clips[0])
    assert len(frames) >= 16 and clip.fps == 8
    measured = track(frames, COLOURS["red"])
    assert measured["first_area"] > 50  # there is a red circle to follow
    assert measured["kept_area"] >= 0.5, measured
    assert measured["travel_px"] >= 2.0, measured
