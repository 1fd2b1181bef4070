"""/tune's training on the tiny SD model: a LoRA file diffusers loads, cancellable, and resumed from its
checkpoint exactly as if it had never stopped."""

from __future__ import annotations

import pytest
from PIL import Image
from safetensors.torch import load_file

from engine.lora_files import inspect
from engine.tiny import build_tiny_pipeline
from engine.tune import TuneCancelled, TuneSettings, train_lora

SETTINGS = TuneSettings(steps=12, checkpoint_every=5, batch=2, rank=2)


def board() -> list[Image.Image]:
    return [Image.new("RGB", (80, 64), (40 * i, 200, 255 - 40 * i)) for i in range(5)]


def test_a_stopped_tune_resumes_from_its_checkpoint_as_if_it_had_never_stopped(tmp_path):
    pipe = build_tiny_pipeline(seed=0)
    whole = train_lora(pipe, board(), tmp_path / "whole.safetensors", checkpoint=tmp_path / "a.ckpt", settings=SETTINGS)
    assert not (tmp_path / "a.ckpt").exists()  # done: the checkpoint is gone
    info = inspect(whole)
    assert (info.denoiser, info.rank, info.context_dim) == ("unet", 2, pipe.unet.config.cross_attention_dim)

    with pytest.raises(TuneCancelled):  # cancelled at step 7: the checkpoint of step 5 stays
        train_lora(
            pipe, board(), tmp_path / "r.safetensors", checkpoint=tmp_path / "b.ckpt", settings=SETTINGS,
            on_step=lambda done, total: done < 7,
        )  # fmt: skip
    assert (tmp_path / "b.ckpt").exists() and not (tmp_path / "r.safetensors").exists()
    seen = []
    resumed = train_lora(
        pipe, board(), tmp_path / "r.safetensors", checkpoint=tmp_path / "b.ckpt", settings=SETTINGS,
        on_step=lambda done, total: seen.append(done) or True,
    )  # fmt: skip
    assert seen == list(range(6, 13))
    expected, got = load_file(whole), load_file(resumed)
    assert expected.keys() == got.keys()
    assert all((expected[k] - got[k]).abs().max() < 1e-5 for k in expected)
    with pytest.raises(ValueError, match="5–30 pictures, not 4"):
        train_lora(pipe, board()[:4], tmp_path / "x.safetensors", checkpoint=tmp_path / "c.ckpt")
