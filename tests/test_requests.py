"""Which requests may share one pipeline call: derived from RenderRequest's own fields."""

from __future__ import annotations

import dataclasses

from PIL import Image

from engine.requests import Action, ImagePromptMethod, RenderRequest

BASE = RenderRequest(action=Action.IMAGINE, prompt="a fox", seeds=(1, 2, 3, 4), width=64, height=64)

# Each request keeps its own value of these in a shared call; the engine's batching relies on it.
OWN = {
    "prompt",
    "seeds",
    "negative_prompt",
    "model",
    "init_image",
    "mask_image",
    "end_image",  # Animate: each clip ends on its own picture
    "blend_images",
    "chaos",
    "preview",
    "safety_check",
    "image_prompt",
    # --sref: the step callback moves each tile toward its own request's statistics (engine/actions/style.py)
    "style_images",
    "style_codes",
    "style_weight",
}


def test_the_fields_each_request_keeps_are_exactly_these():
    assert {f.name for f in dataclasses.fields(RenderRequest) if f.metadata.get("own")} == OWN


def test_requests_differing_only_in_their_own_fields_share_a_call():
    picture = Image.new("RGB", (64, 64))
    other = dataclasses.replace(
        BASE,
        prompt="a cat",
        seeds=(9, 8, 7, 6),
        negative_prompt="text",
        model="fake",
        init_image=picture,
        chaos=40,
        preview=True,
        safety_check=True,
    )
    assert other.batch_key("fake") == BASE.batch_key("fake")
    assert other.batch_key("fake") != BASE.batch_key("another model")


def test_requests_differing_in_anything_else_do_not():
    for change in (
        {"action": Action.VARIATION},
        {"width": 72},
        {"height": 48},
        {"steps": 10},
        {"guidance_scale": 0.0},
        {"strength": 0.4},
        {"stop": 50},
        {"tile": True},
        {"image_weight": 2.0},
        {"image_prompt_method": ImagePromptMethod.IMAGE_TO_IMAGE},
    ):
        assert dataclasses.replace(BASE, **change).batch_key("fake") != BASE.batch_key("fake"), change
