"""The pure job-spec builders: what a prompt, a picture or a click on a job records and draws."""

from __future__ import annotations

import dataclasses

import pytest

from bot import edits, kinds
from bot.prompt import parse_prompt
from bot.rows import Job
from bot.settings import ModelDefaults, Settings
from bot.spec import InputImage, JobSpec
from bot.spec_builders import child_spec, image_prompt_spec, imagine_spec, picture_spec
from engine import params
from engine.fake import FakeEngine
from engine.requests import ImagePromptMethod, ModelHints

ENGINE = FakeEngine(models=["fake", "turbo"], tile_size=64)
PICTURE = InputImage(path="inputs/ab.png", name="cat.png", width=96, height=64)


def settings(**overrides) -> Settings:
    return Settings(_env_file=None, discord_token="x", model="fake", models="fake,turbo", **overrides)


def spec_of(prompt: str, *, defaults=None, model: str = "fake", **overrides) -> JobSpec:
    parsed = parse_prompt(prompt, models=["fake", "turbo"])[0]
    return imagine_spec(parsed, settings=settings(**overrides), engine=ENGINE, model=model, defaults=defaults or {})


def job_of(kind: kinds.JobKind, spec: JobSpec, prompt: str = "a fox") -> Job:
    return Job(
        id=7, kind=kind.name, parent_id=None, parent_index=None, user_id=1, guild_id=None, channel_id=2,
        prompt=prompt, spec=spec, seeds=kind.seeds(1), model="fake", status="done", progress=1.0, error=None,
        attempts=1, gpu_seconds=0.0, application_id=None, interaction_token=None, token_expires_at=None,
        message_id=None, result_channel_id=None, result_message_id=None, delivered_at=None, created_at="",
        started_at=None, finished_at=None,
    )  # fmt: skip


def test_a_prompt_records_what_it_asks_for():
    spec = spec_of("a fox --ar 3:2 --stylize 250 --chaos 20 --no text --q .5 --stop 80 --tile")
    render = spec.render
    assert (render.width, render.height) == params.tile_size(3, 2, 64) == (80, 56)
    assert render.guidance_scale == params.guidance_for_stylize(250)
    assert (render.chaos, render.negative_prompt, render.steps, render.stop, render.tile) == (20, "text", 10, 80, True)
    assert (spec.shown.aspect, spec.shown.quality, spec.shown.stylize) == ("3:2", 0.5, 250)


def test_the_members_settings_fill_in_what_the_prompt_leaves_out_and_the_prompt_wins():
    defaults = {"aspect": "2:3", "quality": 2.0, "stylize": 0}
    spec = spec_of("a fox", defaults=defaults)
    assert (spec.shown.aspect, spec.render.steps, spec.render.guidance_scale) == ("2:3", 40, 12.0)
    spec = spec_of("a fox --ar 1:1 --q 1", defaults=defaults)
    assert (spec.shown.aspect, spec.render.steps) == ("1:1", 20)


def test_guidance_and_steps_start_from_the_models_own_defaults():
    turbo = {"turbo": ModelDefaults(steps=4, guidance_scale=0.0)}
    spec = spec_of("a fox --stylize 1000", model="turbo", model_defaults=turbo)
    assert (spec.render.steps, spec.render.guidance_scale) == (4, 0.0)
    spec = spec_of("a fox", guidance_scale=5.0, max_steps=10, steps=30)  # GUIDANCE_SCALE at the default stylize
    assert (spec.render.guidance_scale, spec.render.steps) == (5.0, 10)


def test_a_picture_keeps_its_size_and_runs_enough_steps_at_its_strength():
    parsed = parse_prompt("a fox --q .25")[0]
    spec = picture_spec(parsed, PICTURE, strength=0.1, settings=settings(), engine=ENGINE, model="fake", defaults={})
    assert (spec.render.width, spec.render.height, spec.render.strength) == (96, 64, 0.1)
    assert int(spec.render.steps * 0.1) >= 2 and spec.inputs == (PICTURE,) and spec.shown.aspect is None


def test_an_image_prompt_takes_the_pictures_shape_unless_ar_says_otherwise():
    engine = FakeEngine(models=["fake"], image_prompt_method=ImagePromptMethod.IMAGE_TO_IMAGE)
    facts = {"settings": settings(), "engine": engine, "model": "fake", "defaults": {}}
    spec = image_prompt_spec(parse_prompt("a fox --iw 2")[0], PICTURE, **facts)
    assert spec.shown.aspect == "3:2" and spec.render.image_weight == 2.0
    assert spec.render.image_prompt_method == "image-to-image"
    assert int(spec.render.steps * params.image_prompt_strength(2.0)) >= 2
    assert image_prompt_spec(parse_prompt("a fox --ar 1:1")[0], PICTURE, **facts).shown.aspect == "1:1"


def _child(parent: Job, kind: kinds.JobKind, **given):
    arguments = {"source_size": (64, 64), "strength": kind.default_strength, "remix": None, "edit": None}
    arguments.update(given)
    return child_spec(parent, kind, model="fake", defaults={}, settings=settings(), engine=ENGINE, **arguments)


def test_a_variation_draws_from_the_tile_at_its_size_and_strength():
    parent = job_of(kinds.IMAGINE, spec_of("a fox --ar 3:2 --tile"))
    spec, text, model = _child(parent, kinds.VARIATION, source_size=(80, 56), strength=params.VARY_SUBTLE)
    assert (spec.render.width, spec.render.height, spec.render.strength) == (80, 56, params.VARY_SUBTLE)
    assert (text, model, spec.render.tile) == ("a fox", "fake", True)
    assert int(spec.render.steps * params.VARY_SUBTLE) >= kinds.VARIATION.min_steps


def test_a_remix_draws_the_new_prompt_at_the_tiles_size():
    parent = job_of(kinds.IMAGINE, spec_of("a fox --ar 3:2"))
    remix = parse_prompt("a wolf --ar 1:1 --chaos 30 --model turbo", models=["fake", "turbo"])[0]
    spec, text, model = _child(parent, kinds.VARIATION, source_size=(80, 56), remix=remix)
    assert (spec.render.prompt, spec.render.chaos, text, model) == ("a wolf", 30, remix.raw, "turbo")
    assert (spec.render.width, spec.render.height, spec.shown.aspect) == (80, 56, "3:2")  # the tile's shape


def test_a_reroll_of_a_pictures_variation_is_as_strong_again_and_keeps_the_picture():
    parent = job_of(kinds.VARIATION_OF_PICTURE, dataclasses.replace(spec_of("a fox"), inputs=(PICTURE,)))
    parent = dataclasses.replace(parent, spec=parent.spec.replace_render(strength=params.VARY_SUBTLE))
    spec, _, _ = _child(parent, kinds.VARIATION_OF_PICTURE, source_size=None, strength=None)
    assert spec.render.strength == params.VARY_SUBTLE and spec.inputs == (PICTURE,)
    # A kind drawn from a tile never carries its parent's picture along.
    spec, _, _ = _child(parent, kinds.UPSCALE)
    assert spec.inputs == () and spec.render.image_prompt_method is None


@pytest.mark.parametrize("made", ["zoom", "pan"])
def test_an_edit_records_what_was_chosen_and_draws_on_the_new_canvas(made):
    parent = job_of(kinds.UPSCALE, spec_of("a fox --stop 50 --tile"))
    edit = edits.zoom(64, 64, 2.0) if made == "zoom" else edits.pan(64, 64, edits.Direction.RIGHT, tile_size=64,
                                                                    size_limit=256)  # fmt: skip
    kind = kinds.ZOOM if made == "zoom" else kinds.PAN
    spec, _, _ = _child(parent, kind, edit=edit)
    assert spec.edit == edit
    assert (spec.render.width, spec.render.height) == edits.result_size(edit, 64, 64)
    # the new area is re-noised from the kept picture's edge (engine.params.OUTPAINT_NEW_AREA), not drawn from noise
    assert (spec.render.stop, spec.render.tile, spec.render.strength) == (100, False, params.OUTPAINT_NEW_AREA)
    # A variation of the edited picture is no edit.
    again, _, _ = _child(job_of(kind, spec), kinds.VARIATION)
    assert again.edit is None


def test_a_models_own_new_area_strength_draws_its_zoom_outs_and_pans():
    engine = FakeEngine(models=["fake"], tile_size=64, hints={"fake": ModelHints(new_area_strength=0.2)})
    parent = job_of(kinds.UPSCALE, spec_of("a fox"))
    pan = edits.pan(64, 64, edits.Direction.RIGHT, tile_size=64, size_limit=256)
    for kind, edit in ((kinds.ZOOM, edits.zoom(64, 64, 2.0)), (kinds.PAN, pan)):
        spec, _, _ = child_spec(
            parent, kind, model="fake", defaults={}, settings=settings(), engine=engine, source_size=(64, 64),
            strength=kind.default_strength, remix=None, edit=edit,
        )  # fmt: skip
        assert spec.render.strength == 0.2 and int(spec.render.steps * 0.2) >= kind.min_steps
    # the operator's MODEL_DEFAULTS come first
    mine = settings(model_defaults={"fake": ModelDefaults(new_area_strength=0.35)})
    spec, _, _ = child_spec(
        parent, kinds.ZOOM, model="fake", defaults={}, settings=mine, engine=engine, source_size=(64, 64),
        strength=kinds.ZOOM.default_strength, remix=None, edit=edits.zoom(64, 64, 2.0),
    )  # fmt: skip
    assert spec.render.strength == 0.35
    # a variation's strength is its own, whatever the model's new area
    spec, _, _ = child_spec(
        parent, kinds.VARIATION, model="fake", defaults={}, settings=settings(), engine=engine, source_size=(64, 64),
        strength=params.VARY_SUBTLE, remix=None, edit=None,
    )  # fmt: skip
    assert spec.render.strength == params.VARY_SUBTLE
