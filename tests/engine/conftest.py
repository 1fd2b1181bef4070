"""Engine tests run on a tiny random-weight SD pipeline built from config (no hub, no GPU)."""

from __future__ import annotations

import os

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from engine.requests import Action, RenderRequest  # noqa: E402

# One thread: these 2 cores are shared, and two OpenMP threads fighting a busy neighbour for a core
# spin at barriers (a 2 ms VAE encode took 600 ms). Tiny models gain nothing from a second thread.
torch.set_num_threads(1)

TILE = 64


@pytest.fixture(scope="session")
def tiny_pipe():
    from engine.tiny import build_tiny_pipeline

    return build_tiny_pipeline(seed=0)


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory):
    from engine.tiny import save_tiny_pipeline

    return save_tiny_pipeline(tmp_path_factory.mktemp("models") / "tiny")


# The transformer families, each a tiny random pipeline saved as a diffusers folder (loading is tested too).
FAMILIES = ("sd3", "flux", "z-image", "qwen-image")  # every action: the contract tests run on these
# Flux.1 Kontext and Flux.2 [klein] refuse image-to-image (their image input is a reference: test_families.py)
ALL_FAMILIES = (*FAMILIES, "flux-kontext", "flux2-klein")


@pytest.fixture(scope="session")
def family_folder(tmp_path_factory):
    """family key -> a tiny diffusers folder of that family (engine.tiny.build), built once per session."""
    from engine.tiny import build

    folders: dict[str, object] = {}

    def folder(family: str):
        if family not in folders:
            folders[family] = build(family, tmp_path_factory.mktemp("families") / family)
        return folders[family]

    return folder


@pytest.fixture
async def engine(tiny_pipe):
    from engine.core import DiffusersEngine

    async with DiffusersEngine(model="tiny", pipelines={"tiny": tiny_pipe}, device="cpu", batch_window_s=0.0) as e:
        yield e


def request(**overrides) -> RenderRequest:
    base = dict(action=Action.IMAGINE, prompt="a red circle", seeds=(1, 2, 3, 4), width=TILE, height=TILE, steps=6)
    base.update(overrides)
    return RenderRequest(**base)


def pixels(image) -> np.ndarray:
    return np.asarray(image.convert("RGB"), dtype=np.float64)


def mean_abs(a, b) -> float:
    return float(np.abs(pixels(a) - pixels(b)).mean())


class UNetCalls:
    """Counts UNet forward passes (one per denoising step with CFG batched); can raise on demand."""

    def __init__(self, unet):
        self.count = 0
        self.fail_with: BaseException | None = None
        self._handle = unet.register_forward_pre_hook(self._hook)

    def _hook(self, module, args):
        self.count += 1
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error

    def remove(self):
        self._handle.remove()


@pytest.fixture
def unet_calls(tiny_pipe):
    calls = UNetCalls(tiny_pipe.unet)
    yield calls
    calls.remove()
