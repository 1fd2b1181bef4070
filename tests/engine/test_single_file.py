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


# Keys a saved config carries that say who wrote it, not what the model is.
_WRITER_KEYS = {"_diffusers_version", "_name_or_path", "transformers_version", "dtype", "torch_dtype"}


def _config_keys(path) -> set[str]:
    import json

    return set(json.loads(path.read_text())) - _WRITER_KEYS


@pytest.mark.parametrize(
    ("family", "unet", "encoders"),
    [("sd", 859_520_964, (123_060_480,)), ("sdxl", 2_567_463_684, (123_060_480, 694_659_840))],
)
def test_the_shipped_configs_are_sd15s_and_sdxls(family, unet, encoders):
    """engine/configs/{sd,sdxl}: each component builds from its config (on the meta device: no memory)
    with the parameter counts of SD 1.5 and SDXL base; the tokenizers are CLIP's, from its merges."""
    from accelerate import init_empty_weights
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from engine.loading import CONFIGS_DIR
    from engine.tokenizer import clip_tokenizer

    folder = CONFIGS_DIR / family

    def count(model) -> int:
        return sum(p.numel() for p in model.parameters())

    with init_empty_weights():
        assert count(UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / "unet"))) == unet
        assert count(AutoencoderKL.from_config(AutoencoderKL.load_config(folder / "vae"))) == 83_653_863
        names = ("text_encoder", "text_encoder_2")
        for name, params, cls in zip(names, encoders, (CLIPTextModel, CLIPTextModelWithProjection), strict=False):
            assert count(cls(CLIPTextConfig.from_pretrained(folder / name))) == params
    assert clip_tokenizer()("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    assert clip_tokenizer(pad_token="!").pad_token_id == 0  # SDXL's second tokenizer pads with "!"


async def test_a_single_sdxl_file_loads_with_the_shipped_configs_alone(tmp_path, monkeypatch):
    """No SINGLE_FILE_CONFIGS: the file loads with a config folder laid out as the shipped one (its
    files and keys; the tiny model's values) and CLIP's tokenizers built from the shipped merges."""
    import json
    import shutil

    from engine import loading
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_sdxl_pipeline
    from engine.tokenizer import clip_tokenizer

    pipe = build_tiny_sdxl_pipeline(seed=0, second_encoder_width=48, tokenizer=clip_tokenizer())
    pipe.tokenizer_2 = clip_tokenizer(pad_token="!")
    pipe.save_pretrained(tmp_path / "tiny")
    shipped = loading.CONFIGS_DIR / "sdxl"
    laid_out = tmp_path / "configs" / "sdxl"
    files = sorted(p.relative_to(shipped) for p in shipped.rglob("*.json"))
    assert not any(str(f).startswith("tokenizer") for f in files)  # tokenizers come from engine/configs/clip
    for relative in files:
        ours = tmp_path / "tiny" / relative
        theirs, mine = (json.loads(path.read_text()) for path in (shipped / relative, ours))
        if relative.parts[0].startswith("text_encoder"):  # transformers writes only what differs from its defaults
            assert (theirs["architectures"], theirs["model_type"]) == (mine["architectures"], mine["model_type"])
        elif relative.name != "model_index.json":  # diffusers writes every key
            assert _config_keys(shipped / relative) == _config_keys(ours), relative
        (laid_out / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ours, laid_out / relative)
    index = json.loads((shipped / "model_index.json").read_text())
    tiny_index = json.loads((tmp_path / "tiny" / "model_index.json").read_text())
    assert all(tiny_index[name] == value for name, value in index.items())  # the same components and classes
    monkeypatch.setattr(loading, "CONFIGS_DIR", tmp_path / "configs")
    checkpoint = save_sdxl_single_file(pipe, tmp_path / "ponyV6.safetensors")
    grid = render_request(prompt="a photo of a cat", seeds=(1, 2), steps=3)
    async with DiffusersEngine(model="original", pipelines={"original": pipe}, device="cpu") as engine:
        expected = await engine.render(grid)
    async with DiffusersEngine(model="pony", sources={"pony": str(checkpoint)}, device="cpu") as engine:
        result = await engine.render(grid)
    for a, b in zip(expected.images, result.images, strict=True):
        assert (pixels(a) == pixels(b)).all()


def test_an_sd2_file_needs_the_operators_config_folder_the_shipped_one_is_sd1s():
    from engine.family import SD
    from engine.loading import CONFIGS_DIR, single_file_config

    sd1 = ["cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"]
    sd2 = ["cond_stage_model.model.token_embedding.weight"]  # OpenCLIP's text encoder
    assert single_file_config(SD, None, sd1) == str(CONFIGS_DIR / "sd")
    with pytest.raises(ModelSourceError, match="SINGLE_FILE_CONFIGS"):
        single_file_config(SD, None, sd2)
    assert single_file_config(SD, {"sd": "/models/sd2-config"}, sd2) == "/models/sd2-config"
