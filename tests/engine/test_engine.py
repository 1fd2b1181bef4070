"""The engine as a service: cancellation, failures, batching across users, loading models."""

from __future__ import annotations

import asyncio
import logging

import pytest
import torch

from engine.core import DiffusersEngine
from engine.requests import RenderError
from tests.engine.conftest import mean_abs, pixels, request


async def test_cancel_stops_within_one_step_and_the_engine_stays_usable(engine, unet_calls):
    first_step = asyncio.Event()
    seen = []

    def progress(event):
        seen.append(event.step)
        first_step.set()

    task = asyncio.create_task(engine.render(request(steps=150), progress=progress))
    await asyncio.wait_for(first_step.wait(), timeout=10)
    calls_at_cancel = unet_calls.count
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    # The next render runs only once the cancelled one has left the worker thread.
    before_next = unet_calls.count
    result = await engine.render(request(steps=2))
    assert len(result.images) == 4
    assert before_next - calls_at_cancel <= 2  # the step in flight, at most one more
    assert unet_calls.count < 20  # nowhere near the 150 steps asked for


async def test_cancel_while_queued_never_renders(tiny_pipe, unet_calls):
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, batch_window_s=0.0) as engine:
        started = asyncio.Event()
        busy = asyncio.create_task(engine.render(request(steps=30), progress=lambda e: started.set()))
        await asyncio.wait_for(started.wait(), timeout=10)
        queued = asyncio.create_task(engine.render(request(steps=30, seeds=(9,))))
        await asyncio.sleep(0)
        queued.cancel()
        await busy
        with pytest.raises(asyncio.CancelledError):
            await queued
        assert engine.stats.batches == 1


@pytest.mark.parametrize(
    ("error", "message"),
    [
        (RuntimeError("boom"), "render failed"),
        (torch.OutOfMemoryError("CUDA out of memory"), "ran out of memory"),
    ],
)
async def test_a_failure_fails_only_that_request(engine, unet_calls, error, message):
    unet_calls.fail_with = error
    with pytest.raises(RenderError, match=message) as info:
        await engine.render(request())
    assert "Traceback" not in str(info.value)
    result = await engine.render(request())
    assert len(result.images) == 4


async def test_compatible_requests_share_one_pipeline_call(tiny_pipe):
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, batch_window_s=0.3) as engine:
        alice = request(prompt="a red circle", seeds=(1, 2, 3, 4))
        bob = request(prompt="a blue square", negative_prompt="red", seeds=(5, 6, 7, 8), preview=True)
        events = {"alice": [], "bob": []}
        a, b = await asyncio.gather(
            engine.render(alice, progress=events["alice"].append),
            engine.render(bob, progress=events["bob"].append),
        )
        assert engine.stats.batches == 1 and engine.stats.batch_sizes == [2]
        # each gets its own four tiles, progress and preview
        assert a.seeds == (1, 2, 3, 4) and b.seeds == (5, 6, 7, 8)
        assert all(mean_abs(x, y) > 5 for x in a.images for y in b.images)
        assert len(events["alice"]) == len(events["bob"]) == alice.steps
        # each is charged half the batch's device time, not all of it (what /info adds up)
        assert a.elapsed_s == b.elapsed_s > 0
        assert a.elapsed_s + b.elapsed_s < 1.5 * max(engine._render_s.values())
        assert events["alice"][-1].preview is None and events["bob"][-1].preview is not None
        # same requests in the same batch -> the same pixels
        a2, b2 = await asyncio.gather(engine.render(alice), engine.render(bob))
        assert engine.stats.batches == 2
        for x, y in zip(a.images + b.images, a2.images + b2.images, strict=True):
            assert (pixels(x) == pixels(y)).all()
        # and alone it is the same picture up to the last bit (batched and unbatched runs may differ in the last bit)
        alone = await engine.render(alice)
        assert max(mean_abs(x, y) for x, y in zip(a.images, alone.images, strict=True)) < 1.0


async def test_incompatible_requests_are_not_merged(tiny_pipe):
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, batch_window_s=0.2) as engine:
        await asyncio.gather(engine.render(request(steps=4)), engine.render(request(steps=5)))
        assert engine.stats.batch_sizes == [1, 1]


async def test_max_batch_caps_images_per_call(tiny_pipe):
    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, batch_window_s=0.2, max_batch=8) as e:
        await asyncio.gather(*(e.render(request(steps=2, seeds=(i, i + 1, i + 2, i + 3))) for i in range(3)))
        assert e.stats.batch_sizes == [2, 1]


async def test_img2img_pipeline_shares_the_weights(engine):
    model = engine._model("tiny")
    assert model.img2img.unet is model.text2img.unet
    assert model.img2img.vae is model.text2img.vae
    assert model.img2img.text_encoder is model.text2img.text_encoder


async def test_loads_a_diffusers_folder(tiny_folder):
    async with DiffusersEngine(model=str(tiny_folder), device="cpu", batch_window_s=0.0) as engine:
        result = await engine.render(request(model=str(tiny_folder), steps=2))
        assert len(result.images) == 4
        assert engine._model(str(tiny_folder)).text2img.tokenizer.model_max_length == 77
        assert engine.native_size() == 64


async def test_default_model_falls_back_to_a_random_tiny_one_and_says_so(monkeypatch, tmp_path, caplog):
    import engine.core

    monkeypatch.setattr(engine.core, "WEIGHTS_DIR", tmp_path)
    with caplog.at_level(logging.WARNING, logger="engine.core"):
        async with DiffusersEngine(device="cpu", batch_window_s=0.0) as e:
            assert e.default_model == "dreamgrid-tiny" and list(e.models) == ["dreamgrid-tiny"]
            assert len((await e.render(request(steps=2))).images) == 4
    assert "RANDOM weights" in caplog.text


async def test_other_models_load_lazily(tiny_pipe, tiny_folder):
    async with DiffusersEngine(
        model="tiny", models=["tiny", str(tiny_folder)], pipelines={"tiny": tiny_pipe}, batch_window_s=0.0
    ) as engine:
        assert str(tiny_folder) not in engine._loaded
        await engine.render(request(model=str(tiny_folder), steps=2))
        assert str(tiny_folder) in engine._loaded


async def test_a_missing_model_is_refused_at_start_by_name(tiny_pipe, tmp_path):
    missing = str(tmp_path / "nothing")
    with pytest.raises(RenderError, match=f"could not load model '{missing}': no such diffusers folder"):
        async with DiffusersEngine(model="tiny", models=["tiny", missing], pipelines={"tiny": tiny_pipe}):
            pass


async def test_a_model_that_fails_to_load_names_no_server_path_to_members(tiny_pipe, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "model_index.json").write_text("{not json")
    async with DiffusersEngine(model="tiny", models=["tiny", str(broken)], pipelines={"tiny": tiny_pipe}) as engine:
        with pytest.raises(RenderError) as info:
            await engine.render(request(model=str(broken), steps=2))
        assert str(info.value) == "could not load model 'broken-model'; the bot's operator has been told"
        assert str(tmp_path) not in str(info.value)
        assert len((await engine.render(request(steps=2))).images) == 4


async def test_asking_for_a_safety_checker_the_model_lacks_is_logged(tiny_pipe, caplog):
    with caplog.at_level(logging.WARNING, logger="engine.core"):
        async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, safety_checker=True) as engine:
            assert len((await engine.render(request(steps=2))).images) == 4
    assert "has none" in caplog.text


async def test_shutdown_fails_queued_requests_politely(tiny_pipe):
    engine = DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, batch_window_s=0.0)
    async with engine:
        pass
    with pytest.raises(RenderError, match="not running"):
        await engine.render(request(steps=2))


async def test_native_size_of_an_unloaded_model_reads_its_config_without_loading_it(tiny_pipe, tiny_folder):
    from engine.core import DiffusersEngine

    async with DiffusersEngine(
        model="tiny", models=["tiny", str(tiny_folder)], pipelines={"tiny": tiny_pipe}, device="cpu"
    ) as engine:
        assert engine.native_size(str(tiny_folder)) == 64
        assert str(tiny_folder) not in engine._loaded  # no weights loaded on the event loop


async def test_the_safety_checker_flags_images_and_keeps_their_pixels():
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    tiny = {"hidden_size": 8, "intermediate_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    config = CLIPConfig(text_config=tiny, vision_config={**tiny, "image_size": 32, "patch_size": 16}, projection_dim=8)
    pipe.safety_checker = StableDiffusionSafetyChecker(config)  # a real one; its verdicts come from the stub
    pipe.feature_extractor = CLIPImageProcessor()
    pipe.run_safety_checker = lambda image, device, dtype: (image * 0, [True, False, True, False])
    async with DiffusersEngine(
        model="tiny", pipelines={"tiny": pipe}, device="cpu", batch_window_s=0.0, safety_checker=True
    ) as engine:
        checked = await engine.render(request(steps=2, safety_check=True))
        unchecked = await engine.render(request(steps=2))
    assert checked.flagged == (True, False, True, False)
    assert unchecked.flagged == ()
    assert all(pixels(image).max() > 0 for image in checked.images)  # never a black square
    for kept, plain in zip(checked.images, unchecked.images, strict=True):
        assert (pixels(kept) == pixels(plain)).all()


def test_a_model_without_a_safety_checker_says_so_without_loading(tiny_folder):
    # What /config safety_checker asks before it accepts "on": this model ships no checker.
    engine = DiffusersEngine(model=str(tiny_folder), device="cpu", safety_checker=True)
    assert engine.has_safety_checker() is False
    assert DiffusersEngine(model=str(tiny_folder), device="cpu").has_safety_checker() is False  # SAFETY_CHECKER off
    assert not engine._loaded


async def test_with_room_for_one_model_alternating_two_works_and_memory_is_returned(tiny_folder, tmp_path):
    import psutil

    from engine.tiny import save_tiny_pipeline

    other = str(save_tiny_pipeline(tmp_path / "other", seed=1))
    first = str(tiny_folder)
    process = psutil.Process()
    async with DiffusersEngine(
        model=first, models=[first, other], device="cpu", batch_window_s=0.0, max_loaded_models=1
    ) as engine:
        rss = []
        for switch in range(12):
            name = other if switch % 2 == 0 else first
            result = await engine.render(request(model=name, seeds=(1,), steps=1))
            assert result.model == name and list(engine.loaded_models) == [name]
            rss.append(process.memory_info().rss)
    # Two switches warm the allocator, then ten must not grow. Measured: a model kept alive after its
    # eviction adds ~7 MiB a switch (70 MiB over ten); freed, RSS stays within a few MiB.
    growth = max(rss[2:]) - rss[2]
    assert growth < 20 * 2**20, [r // 2**20 for r in rss]


async def test_an_evicted_model_is_loaded_again_when_a_job_needs_it(tiny_pipe, tiny_folder):
    async with DiffusersEngine(
        model="tiny", models=["tiny", str(tiny_folder)], pipelines={"tiny": tiny_pipe}, max_loaded_models=1
    ) as engine:
        assert list(engine.loaded_models) == ["tiny"]
        await engine.render(request(model=str(tiny_folder), steps=1))
        assert list(engine.loaded_models) == [str(tiny_folder)]
        assert len((await engine.render(request(steps=1))).images) == 4
        assert list(engine.loaded_models) == ["tiny"]
