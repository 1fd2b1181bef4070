"""/blend in the engine: what a member sees in the four tiles, on both paths."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from engine.actions.blend import IP_ADAPTER, LATENTS
from engine.core import TINY_MODEL, WEIGHTS_DIR
from engine.params import BLEND_STRENGTH
from engine.requests import Action, RenderError
from engine.training.dataset import COLOURS, Scene, render
from tests.engine.conftest import TILE, mean_abs, request

TRAINED = WEIGHTS_DIR / TINY_MODEL / "model_index.json"

RED_CIRCLE_ON_BLUE = render(Scene("circle", "red", "blue", "large", "center"))
YELLOW_TRIANGLE_ON_GREEN = render(Scene("triangle", "yellow", "green", "large", "center"))


def blend_request(images, **overrides):
    base = dict(action=Action.BLEND, prompt="", blend_images=tuple(images), strength=BLEND_STRENGTH, steps=20)
    return request(**(base | overrides))


def colour_shares(tile: Image.Image, palettes: list[tuple[str, ...]]) -> list[float]:
    """The share of the tile's pixels nearest to each input's colours (among all inputs' colours)."""
    names = [name for palette in palettes for name in palette]
    owner = np.array([i for i, palette in enumerate(palettes) for _ in palette])
    rgb = np.array([COLOURS[name] for name in names], dtype=np.float32)
    px = np.asarray(tile.convert("RGB"), dtype=np.float32).reshape(-1, 1, 3)
    nearest = ((px - rgb[None]) ** 2).sum(-1).argmin(1)
    return [float((owner[nearest] == i).mean()) for i in range(len(palettes))]


@pytest.mark.skipif(not TRAINED.exists(), reason="the trained dreamgrid-tiny model is not installed")
async def test_blend_of_two_scenes_gives_four_new_tiles_each_with_colours_of_both():
    from engine.core import DiffusersEngine

    sources = [RED_CIRCLE_ON_BLUE, YELLOW_TRIANGLE_ON_GREEN]
    async with DiffusersEngine(device="cpu", batch_window_s=0.0) as engine:
        result = await engine.render(blend_request(sources, seeds=(1, 2, 3, 4)))
    assert result.method == LATENTS
    assert len(result.images) == 4 and all(t.size == (TILE, TILE) for t in result.images)
    for tile in result.images:
        # Not a copy of either input...
        assert min(mean_abs(tile, source) for source in sources) > 10
        # ...and a visible part of it in the colours of each.
        red_blue, yellow_green = colour_shares(tile, [("red", "blue"), ("yellow", "green")])
        assert red_blue >= 0.05 and yellow_green >= 0.05, (red_blue, yellow_green)


async def test_blend_takes_images_of_any_size_and_up_to_five(engine):
    sizes = [(64, 64), (96, 64), (40, 72), (64, 64), (128, 128)]
    sources = [Image.new("RGB", size, colour) for size, colour in zip(sizes, COLOURS.values(), strict=False)]
    result = await engine.render(blend_request(sources, steps=4, width=TILE + 32, height=TILE))
    assert result.method == LATENTS
    assert [t.size for t in result.images] == [(TILE + 32, TILE)] * 4
    again = await engine.render(blend_request(sources, steps=4, width=TILE + 32, height=TILE))
    assert [t.tobytes() for t in again.images] == [t.tobytes() for t in result.images]


@pytest.mark.parametrize("count", [1, 6])
async def test_blend_refuses_too_few_or_too_many_images(engine, count):
    with pytest.raises(RenderError, match="2 to 5 images"):
        await engine.render(blend_request([RED_CIRCLE_ON_BLUE] * count))


def _add_tiny_ip_adapter(pipe, embed_dim: int = 32) -> None:
    """An IP-Adapter with random weights, built from config as diffusers' own tests build one."""
    from diffusers.models.attention_processor import IPAdapterAttnProcessor2_0
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModelWithProjection

    unet = pipe.unet
    cross = unet.config.cross_attention_dim
    torch.manual_seed(0)
    attention, key_id = {}, 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue
        hidden = unet.config.block_out_channels[-1]  # the tiny UNet cross-attends in its middle block only
        assert name.startswith("mid_block"), name
        weights = IPAdapterAttnProcessor2_0(hidden_size=hidden, cross_attention_dim=cross, num_tokens=(4,)).state_dict()
        attention[f"{key_id}.to_k_ip.weight"] = weights["to_k_ip.0.weight"]
        attention[f"{key_id}.to_v_ip.weight"] = weights["to_v_ip.0.weight"]
        key_id += 2
    projection = {
        "proj.weight": torch.randn(4 * cross, embed_dim) * 0.1,
        "proj.bias": torch.zeros(4 * cross),
        "norm.weight": torch.ones(cross),
        "norm.bias": torch.zeros(cross),
    }
    unet._load_ip_adapter_weights([{"image_proj": projection, "ip_adapter": attention}])
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=embed_dim,
        )
    )
    processor = CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    pipe.register_modules(image_encoder=encoder.eval(), feature_extractor=processor)


async def test_with_an_ip_adapter_the_images_embeddings_steer_the_render():
    from engine.core import DiffusersEngine
    from engine.tiny import build_tiny_pipeline

    pipe = build_tiny_pipeline(seed=0)
    _add_tiny_ip_adapter(pipe)
    encoded = []
    pipe.image_encoder.register_forward_hook(lambda module, args, out: encoded.append(args[0].shape[0]))
    async with DiffusersEngine(model="ip", pipelines={"ip": pipe}, device="cpu", batch_window_s=0.0) as engine:
        first = await engine.render(blend_request([RED_CIRCLE_ON_BLUE, YELLOW_TRIANGLE_ON_GREEN], steps=4))
        other = await engine.render(
            blend_request([Image.new("RGB", (64, 64), "white"), Image.new("RGB", (64, 64), "black")], steps=4)
        )
    assert first.method == IP_ADAPTER
    assert [t.size for t in first.images] == [(TILE, TILE)] * 4
    assert encoded[:2] == [2, 2]  # each blend's images went through the image encoder, together
    # Same prompt, same seeds: only the images' embeddings differ, and the tiles follow them.
    assert all(mean_abs(a, b) > 0 for a, b in zip(first.images, other.images, strict=True))
