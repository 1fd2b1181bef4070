"""The model we ship: it loads offline with plain diffusers and does what prompts say."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path

import pytest
import torch

from engine.training.evaluate import DEFAULT_GUIDANCE, eval_cases, generate, load_pipeline, score

MODEL = Path(__file__).resolve().parents[2] / "engine" / "weights" / "dreamgrid-tiny"


@pytest.fixture(scope="module")
def pipe():
    return load_pipeline(str(MODEL))


def test_shipped_model_is_small_and_complete():
    files = [p for p in MODEL.rglob("*") if p.is_file()]
    assert sum(p.stat().st_size for p in files) <= 25 * 1024 * 1024
    names = {p.relative_to(MODEL).as_posix() for p in files}
    for needed in (
        "model_index.json",
        "unet/diffusion_pytorch_model.safetensors",
        "vae/diffusion_pytorch_model.safetensors",
        "text_encoder/model.safetensors",
        "scheduler/scheduler_config.json",
        "tokenizer/tokenizer.json",
    ):
        assert needed in names


def test_shipped_model_loads_offline_with_the_sampler_it_was_evaluated_with(pipe):
    assert type(pipe.scheduler).__name__ == "EulerDiscreteScheduler"
    assert pipe.scheduler.config.prediction_type == "v_prediction"
    assert pipe.tokenizer.model_max_length == 77
    assert len(pipe.tokenizer.tokenize("triangle")) == 1


def test_prompts_steer_the_shipped_model(pipe):
    # A handful of held-out prompts (scenes never seen in training), one seed each.
    cases = eval_cases(1)[::3]  # 8 cases
    images = generate(pipe, cases, steps=20, guidance=DEFAULT_GUIDANCE, size=64, batch=8)
    assert all(im.size == (64, 64) for im in images)
    result = score(cases, images)
    # Chance is 12 % (background) and 14 % (foreground).
    assert result["background"] >= 0.6, result
    assert result["foreground"] >= 0.5, result


def test_the_shipped_model_draws_what_members_type_first_with_no_background(pipe):
    # "a red circle" names no background; read as the start of "a red backdrop with …" it once drew
    # a red canvas. Six such prompts, one seed each: the object in its colour on another background.
    from engine.training.evaluate import classify

    prompts = [
        ("red", "circle"),
        ("yellow", "heart"),
        ("white", "square"),
        ("green", "ring"),
        ("red", "star"),
        ("blue", "triangle"),
    ]
    images = pipe(
        [f"a {colour} {shape}" for colour, shape in prompts], height=64, width=64, num_inference_steps=20,
        guidance_scale=DEFAULT_GUIDANCE, generator=[torch.Generator().manual_seed(i) for i in range(len(prompts))],
    ).images  # fmt: skip
    judged = [classify(image) for image in images]
    assert sum(j.fg == colour and j.bg != colour for j, (colour, _) in zip(judged, prompts, strict=True)) >= 5, judged


def test_the_shipped_model_has_its_own_guidance_and_new_area_and_other_models_the_bots(tmp_path):
    from bot.settings import Settings
    from engine.core import DiffusersEngine
    from engine.params import SHIPPED_GUIDANCE, SHIPPED_NEW_AREA
    from engine.tiny import save_tiny_pipeline

    other = save_tiny_pipeline(tmp_path / "other")
    engine = DiffusersEngine(model="dreamgrid-tiny", device="cpu", sources={"other": str(other)}, models=("other",))
    settings = Settings(_env_file=None, discord_token="x", model="dreamgrid-tiny", guidance_scale=6.0)
    assert engine.defaults().guidance_scale == SHIPPED_GUIDANCE == DEFAULT_GUIDANCE
    assert engine.defaults().new_area_strength == SHIPPED_NEW_AREA
    assert engine.defaults("other").new_area_strength is None  # OUTPAINT_NEW_AREA, the kinds' own
    assert settings.base_guidance("dreamgrid-tiny", engine.defaults()) == SHIPPED_GUIDANCE
    assert settings.base_guidance("other", engine.defaults("other")) == 6.0  # an operator's SD model
