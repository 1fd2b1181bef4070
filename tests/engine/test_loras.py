"""LoRAs on the tiny SD model: loaded once, switched between batches, batched only with equal adapters,
and a LoRA of another family refused from its header before anything is drawn."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
import torch
from safetensors.torch import save_file

from engine.core import DiffusersEngine
from engine.family import FLUX, SD
from engine.lora_files import LoraFileError, inspect
from engine.requests import Action, LoraWeight, RenderRequest, refusal
from engine.tiny import save_tiny_lora
from tests.engine.conftest import mean_abs, request


@pytest.fixture(scope="module")
def lora_files(tiny_pipe, tmp_path_factory):
    folder = tmp_path_factory.mktemp("loras")
    return [str(save_tiny_lora(tiny_pipe, folder / f"style{i}.safetensors", seed=i)) for i in (1, 2)]


@pytest.fixture
async def lora_engine():
    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)  # its own: LoRAs stay injected in the UNet, and unfuse its attention
    async with DiffusersEngine("tiny", pipelines={"tiny": pipe}, device="cpu", batch_window_s=0.3) as engine:
        yield engine


def drawn_with(*loras: tuple[str, float]) -> RenderRequest:
    return request(seeds=(1, 2), loras=tuple(LoraWeight(f"l{i}", path, w) for i, (path, w) in enumerate(loras)))


async def test_a_lora_changes_the_picture_and_switching_back_needs_no_reload(lora_engine, lora_files):
    plain = await lora_engine.render(drawn_with())
    styled = await lora_engine.render(drawn_with((lora_files[0], 1.0)))
    half = await lora_engine.render(drawn_with((lora_files[0], 0.5)))
    both = await lora_engine.render(drawn_with((lora_files[0], 1.0), (lora_files[1], 1.0)))
    again = await lora_engine.render(drawn_with())
    assert mean_abs(plain.images[0], styled.images[0]) > 0.3
    assert 0 < mean_abs(plain.images[0], half.images[0]) < mean_abs(plain.images[0], styled.images[0])
    assert mean_abs(styled.images[0], both.images[0]) > 0.1
    assert mean_abs(plain.images[0], again.images[0]) == 0  # the plain model, exactly
    loras = lora_engine._loaded["tiny"].loras
    assert loras.loads == 2  # each file read once, however often it was switched to
    assert lora_engine.loaded_models == ("tiny",)


async def test_only_requests_with_the_same_adapters_share_a_batch(lora_engine, lora_files):
    a, b = drawn_with((lora_files[0], 1.0)), drawn_with((lora_files[0], 0.5))
    assert a.batch_key("tiny") != b.batch_key("tiny") != drawn_with().batch_key("tiny")
    same = dataclasses.replace(a, prompt="a green square", seeds=(3, 4))
    assert a.batch_key("tiny") == same.batch_key("tiny")
    before = len(lora_engine.stats.batch_sizes)
    await asyncio.gather(*(lora_engine.render(r) for r in (a, b, same)))
    assert sorted(lora_engine.stats.batch_sizes[before:]) == [1, 2]  # a and same together, b alone


def test_a_compiled_model_refuses_loras_before_anything_is_queued(lora_files):
    from engine.optimize import Speedups
    from engine.tiny import build_tiny_pipeline

    engine = DiffusersEngine("tiny", pipelines={"tiny": build_tiny_pipeline(seed=0)}, speedups=Speedups(compile="full"))
    assert engine.lora_refusal("tiny", lora_files[0]) == (
        "this bot compiles its model (COMPILE), and LoRAs need COMPILE=off for now"
    )


async def test_fused_attention_is_unfused_for_a_lora_so_it_draws_as_an_unfused_model_does(lora_files):
    from engine.optimize import Speedups
    from engine.tiny import build_tiny_pipeline

    drawn = []
    for speedups in (Speedups(fuse_qkv=False), Speedups(fuse_qkv=True)):
        pipes = {"tiny": build_tiny_pipeline(seed=0)}
        async with DiffusersEngine("tiny", pipelines=pipes, device="cpu", speedups=speedups) as engine:
            drawn.append(await engine.render(drawn_with((lora_files[0], 0.8))))
    assert mean_abs(drawn[0].images[0], drawn[1].images[0]) < 0.05  # the LoRA took effect on the fused model too


def _header_only_lora(path, names_and_shapes):
    save_file({name: torch.zeros(shape) for name, shape in names_and_shapes.items()}, str(path))
    return str(path)


async def test_a_lora_of_another_family_is_refused_before_anything_is_drawn(lora_engine, lora_files, tmp_path):
    assert lora_engine.lora_refusal("tiny", lora_files[0]) is None
    sdxl = _header_only_lora(
        tmp_path / "sdxl.safetensors",
        {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (4, 2048)},
    )
    flux = _header_only_lora(
        tmp_path / "flux.safetensors", {"transformer.single_transformer_blocks.0.attn.to_k.lora_A.weight": (4, 3072)}
    )
    not_a_lora = tmp_path / "notes.safetensors"
    not_a_lora.write_text("hello")
    assert (
        lora_engine.lora_refusal("tiny", sdxl)
        == "it was trained for Stable Diffusion XL, not for this Stable Diffusion 1.x/2.x model"
    )
    assert "LoRA for transformer (Flux, SD3, …) models" in lora_engine.lora_refusal("tiny", flux)
    assert lora_engine.lora_refusal("tiny", str(not_a_lora)) == "it is not a .safetensors file"
    with pytest.raises(LoraFileError):
        inspect(tmp_path / "missing.safetensors")
    asked = RenderRequest(
        action=Action.IMAGINE, prompt="a fox", seeds=(1,), width=64, height=64, loras=(LoraWeight("xl", sdxl, 1.0),)
    )
    assert refusal(lora_engine, asked) == (
        "The LoRA `xl` can't be used here: it was trained for Stable Diffusion XL, not for this Stable Diffusion "
        "1.x/2.x model"
    )
    assert SD.lora_refusal() is None
    assert FLUX.lora_refusal() == "Flux.1 models cannot take a LoRA in dreamgrid yet"
