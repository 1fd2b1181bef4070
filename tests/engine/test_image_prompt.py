"""Image prompts: a member's picture steers /imagine, through an IP-Adapter or image-to-image."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from engine.params import image_prompt_strength, ip_adapter_scale
from engine.requests import Action, ImagePromptMethod
from tests.engine.conftest import TILE, mean_abs, pixels, request


def picture(colour=(220, 30, 30), size=(96, 64)) -> Image.Image:
    return Image.new("RGB", size, colour)


def image_request(method: ImagePromptMethod, iw: float = 1.0, **overrides):
    base = dict(
        action=Action.IMAGE_PROMPT,
        image_prompt=picture(),
        image_weight=iw,
        image_prompt_method=method,
        steps=8,
    )
    base.update(overrides)
    return request(**base)


def test_iw_maps_to_an_adapter_scale_and_a_strength() -> None:
    assert ip_adapter_scale(1) == 0.5 and ip_adapter_scale(3) == 1.5 and ip_adapter_scale(0) == 0
    assert image_prompt_strength(1) == 0.75 and image_prompt_strength(3) == 0.25
    with pytest.raises(ValueError, match="--iw must be between 0 and 3"):
        image_prompt_strength(3.5)


async def test_without_an_adapter_the_picture_steers_by_image_to_image(engine) -> None:
    assert engine.image_prompt_method() is ImagePromptMethod.IMAGE_TO_IMAGE
    strong = await engine.render(image_request(ImagePromptMethod.IMAGE_TO_IMAGE, iw=3))
    weak = await engine.render(image_request(ImagePromptMethod.IMAGE_TO_IMAGE, iw=0.5))
    assert len(strong.images) == 4 and strong.images[0].size == (TILE, TILE)
    red = picture(size=(TILE, TILE))

    def distance(result):
        return float(np.mean([mean_abs(im, red) for im in result.images]))

    assert distance(strong) < distance(weak)  # a higher --iw stays closer to the picture


async def test_an_ip_adapter_request_on_an_engine_without_one_fails_clearly(engine) -> None:
    from engine.requests import RenderError

    with pytest.raises(RenderError, match="no IP-Adapter installed"):
        await engine.render(image_request(ImagePromptMethod.IP_ADAPTER))


@pytest.fixture(scope="module")
def adapter_folder(tmp_path_factory):
    from engine.tiny import build_tiny_pipeline, save_tiny_ip_adapter

    return save_tiny_ip_adapter(build_tiny_pipeline(seed=0).unet, tmp_path_factory.mktemp("ip") / "adapter")


async def test_an_ip_adapter_folder_is_wired_in_and_only_on_for_image_prompts(adapter_folder) -> None:
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    async with DiffusersEngine(
        model="tiny", pipelines={"tiny": pipe}, device="cpu", batch_window_s=0.0, ip_adapter=adapter_folder
    ) as engine:
        assert engine.image_prompt_method() is ImagePromptMethod.IP_ADAPTER
        assert pipe.image_encoder is not None  # the adapter's CLIP vision model came from the folder
        plain_before = (await engine.render(request(seeds=(3,), steps=8))).images[0]

        red = await engine.render(image_request(ImagePromptMethod.IP_ADAPTER, iw=3, seeds=(3,)))
        blue = await engine.render(
            image_request(ImagePromptMethod.IP_ADAPTER, iw=3, seeds=(3,), image_prompt=picture((20, 20, 230)))
        )
        ignored = await engine.render(image_request(ImagePromptMethod.IP_ADAPTER, iw=0, seeds=(3,)))

        # The picture reaches the UNet: a different picture, a different result, at the same seed.
        assert red.images[0].size == (TILE, TILE)
        assert mean_abs(red.images[0], blue.images[0]) > 0.5
        # Between image prompts the adapter is off: a plain render is unchanged, and --iw 0 is the plain model.
        plain_after = (await engine.render(request(seeds=(3,), steps=8))).images[0]
        assert (pixels(plain_before) == pixels(plain_after)).all()
        assert mean_abs(ignored.images[0], plain_before) < 0.5


async def test_a_missing_adapter_folder_stops_the_engine_with_one_line(tmp_path) -> None:
    from engine.core import DiffusersEngine
    from engine.requests import RenderError
    from engine.tiny import build_tiny_pipeline

    engine = DiffusersEngine(
        model="tiny", pipelines={"tiny": build_tiny_pipeline()}, device="cpu", ip_adapter=tmp_path / "nope"
    )
    with pytest.raises(RenderError, match="could not load the IP-Adapter .* does not exist"):
        async with engine:
            pass
