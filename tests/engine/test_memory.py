"""Memory settings: offload and int8 weights on CUDA, a budget in GB everywhere; what a CPU can check."""

from __future__ import annotations

import importlib.util

import pytest

from engine.loading import MemorySettings, weights_gb
from engine.requests import RenderError
from tests.engine.conftest import request as render_request


def test_memory_settings_name_the_bad_value():
    with pytest.raises(ValueError, match="memory mode must be one of full, model_offload"):
        MemorySettings(mode="swap")
    with pytest.raises(ValueError, match="quantize must be int8"):
        MemorySettings(quantize="int4")
    assert MemorySettings(mode="group_offload").offloads and not MemorySettings().offloads


def test_a_models_weights_are_counted_in_gb(tiny_pipe):
    params = sum(p.numel() for name in ("unet", "vae", "text_encoder") for p in getattr(tiny_pipe, name).parameters())
    assert params * 4 / 1e9 <= weights_gb(tiny_pipe) < params * 4 / 1e9 * 1.01  # float32, plus a few buffers


async def test_offloading_is_a_cuda_setting_a_cpu_engine_renders_resident(tiny_pipe):
    from engine.core import DiffusersEngine

    memory = MemorySettings(mode="model_offload")
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", memory=memory) as engine:
        assert len((await engine.render(render_request(steps=2))).images) == 4
        assert not hasattr(tiny_pipe, "_all_hooks") or not tiny_pipe._all_hooks  # no accelerate offload hooks


async def test_the_memory_budget_unloads_the_least_recently_used_model(tiny_pipe, family_folder):
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_flux_pipeline

    # room for either model alone, not for both
    budget = max(weights_gb(tiny_pipe), weights_gb(build_tiny_flux_pipeline())) * 1.01
    async with DiffusersEngine(
        model="tiny",
        models=["tiny", "flux"],
        pipelines={"tiny": tiny_pipe},
        sources={"flux": str(family_folder("flux"))},
        device="cpu",
        max_loaded_models=2,
        memory_budget_gb=budget,
    ) as engine:
        await engine.render(render_request(steps=2, model="flux"))
        assert engine.loaded_models == ("flux",)
        await engine.render(render_request(steps=2))
        assert engine.loaded_models == ("tiny",)


@pytest.mark.skipif(importlib.util.find_spec("torchao") is not None, reason="torchao is installed here")
async def test_int8_weights_without_torchao_say_how_to_install_it(family_folder):
    from engine.core import DiffusersEngine

    with pytest.raises(RenderError, match="pip install torchao"):
        async with DiffusersEngine(
            model="flux",
            sources={"flux": str(family_folder("flux"))},
            device="cpu",
            memory=MemorySettings(quantize="int8"),
        ):
            pass
