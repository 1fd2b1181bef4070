"""MODELS=pony=/models/ponyV6.safetensors: one original-layout checkpoint loads offline, never unpickled."""

from __future__ import annotations

import pytest

from engine.family import SDXL
from engine.loading import ModelSourceError, check_single_file, family_of_single_file
from engine.requests import RenderError
from tests.engine.checkpoints import save_sdxl_single_file
from tests.engine.conftest import pixels
from tests.engine.conftest import request as render_request


@pytest.fixture(scope="module")
def sdxl_checkpoint(tmp_path_factory):
    """(the tiny SDXL pipeline, its single-file checkpoint, a config folder without any weights)."""
    from engine.tiny import build_tiny_sdxl_pipeline

    pipe = build_tiny_sdxl_pipeline(seed=0, second_encoder_width=48)
    folder = tmp_path_factory.mktemp("single")
    pipe.save_pretrained(folder / "sdxl-config")
    for weights in (folder / "sdxl-config").rglob("*.safetensors"):
        weights.unlink()  # only configs and tokenizers: every weight must come from the file
    return pipe, save_sdxl_single_file(pipe, folder / "ponyV6.safetensors"), folder / "sdxl-config"


def test_the_family_is_read_from_the_tensor_names(sdxl_checkpoint):
    _, checkpoint, _ = sdxl_checkpoint
    assert family_of_single_file(checkpoint) is SDXL


async def test_a_single_sdxl_file_renders_what_the_pipeline_it_came_from_renders(sdxl_checkpoint):
    from engine.core import DiffusersEngine

    pipe, checkpoint, config = sdxl_checkpoint
    grid = render_request(seeds=(1, 2), steps=3)
    async with DiffusersEngine(model="original", pipelines={"original": pipe}, device="cpu") as engine:
        expected = await engine.render(grid)
    async with DiffusersEngine(
        model="pony", sources={"pony": str(checkpoint)}, single_file_configs={"sdxl": str(config)}, device="cpu"
    ) as engine:
        assert engine.family("pony") is SDXL and engine.supports("pony", grid.action) is None
        result = await engine.render(grid)
    for a, b in zip(expected.images, result.images, strict=True):
        assert (pixels(a) == pixels(b)).all()


async def test_a_single_file_without_its_family_config_says_which_setting_to_set(sdxl_checkpoint, monkeypatch):
    from engine import loading
    from engine.core import DiffusersEngine

    monkeypatch.setattr(loading, "CONFIGS_DIR", sdxl_checkpoint[1].parent / "no-configs-here")
    _, checkpoint, _ = sdxl_checkpoint
    with pytest.raises(RenderError, match="SINGLE_FILE_CONFIGS"):
        async with DiffusersEngine(model="pony", sources={"pony": str(checkpoint)}, device="cpu"):
            pass


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin"])
def test_pickled_checkpoints_are_refused_in_one_sentence_without_being_opened(tmp_path, name):
    bomb = tmp_path / name
    bomb.write_bytes(b"not even read")
    with pytest.raises(ModelSourceError, match=r"pickled checkpoint.*only \.safetensors") as info:
        check_single_file(bomb)
    assert str(tmp_path) not in str(info.value)


async def test_a_missing_file_is_named_at_startup(tmp_path):
    from engine.core import DiffusersEngine

    with pytest.raises(RenderError, match="does not exist"):
        async with DiffusersEngine(model="gone", sources={"gone": str(tmp_path / "gone.safetensors")}, device="cpu"):
            pass


async def test_a_member_cannot_name_a_file_the_operator_did_not(sdxl_checkpoint):
    from engine.core import DiffusersEngine

    pipe, checkpoint, config = sdxl_checkpoint
    async with DiffusersEngine(
        model="pony", sources={"pony": str(checkpoint)}, single_file_configs={"sdxl": str(config)}, device="cpu"
    ) as engine:
        # (the operator's own path is the model itself: jobs recorded before it had a short name name it so)
        for sneaky in ("../" + checkpoint.name, str(checkpoint.parent / "other.safetensors"), "/etc/passwd.ckpt"):
            with pytest.raises(RenderError, match="is not installed"):
                await engine.render(render_request(model=sneaky, steps=2))
