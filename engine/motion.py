"""The shipped motion model: a diffusers `MotionAdapter` (AnimateDiff's temporal attention modules)
run inside the shipped model's own `UNet2DConditionModel`, frame by frame.

diffusers' `UNetMotionModel.from_unet2d` cannot take the shipped UNet: it keeps no text-pooled
addition embedding (`addition_embed_type="text"`), so its outputs would not be the UNet's. Here the
UNet stays as it is and each of the adapter's modules runs after the UNet resnet it belongs to
(forward hooks), on the frames of one clip: `(clips * frames, C, H, W)` in, mixed along time, out.
The adapter's layout is AnimateDiff's (a module per down resnet, one more per up block, one in the
middle), so `MotionAdapter.save_pretrained` / `from_pretrained` is the weights format.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from diffusers.models.unets.unet_motion_model import MotionAdapter

MOTION_HEADS = 8
MAX_FRAMES = 32  # the adapter's positional embeddings: the longest clip one call draws


def new_adapter(unet: Any, seed: int = 0) -> MotionAdapter:
    """A fresh adapter shaped for `unet`, its output projections zeroed: at first it changes nothing."""
    torch.manual_seed(seed)
    config = unet.config
    adapter = MotionAdapter(
        block_out_channels=tuple(config.block_out_channels),
        motion_layers_per_block=config.layers_per_block,
        motion_mid_block_layers_per_block=1,
        motion_num_attention_heads=MOTION_HEADS,
        motion_norm_num_groups=config.norm_num_groups,
        motion_max_seq_length=MAX_FRAMES,
        use_motion_mid_block=True,
    )
    for module in _modules(adapter):
        torch.nn.init.zeros_(module.proj_out.weight)
        torch.nn.init.zeros_(module.proj_out.bias)
    return adapter


def fits(adapter: Any, unet: Any) -> bool:
    """Whether the adapter was made for a UNet of these block widths and depths."""
    return tuple(adapter.config.block_out_channels) == tuple(unet.config.block_out_channels) and (
        adapter.config.motion_layers_per_block == unet.config.layers_per_block
    )


def _modules(adapter: Any) -> list[Any]:
    found = [m for block in adapter.down_blocks for m in block.motion_modules]
    found += [m for block in adapter.up_blocks for m in block.motion_modules]
    if adapter.mid_block is not None:
        found += list(adapter.mid_block.motion_modules)
    return found


def _pairs(adapter: Any, unet: Any) -> list[tuple[Any, Any]]:
    """(UNet resnet, the adapter's module after it)."""
    pairs = []
    for unet_block, motion_block in zip(unet.down_blocks, adapter.down_blocks, strict=True):
        pairs += list(zip(unet_block.resnets, motion_block.motion_modules, strict=True))
    for unet_block, motion_block in zip(unet.up_blocks, adapter.up_blocks, strict=True):
        pairs += list(zip(unet_block.resnets, motion_block.motion_modules, strict=True))
    if adapter.mid_block is not None:
        pairs.append((unet.mid_block.resnets[-1], adapter.mid_block.motion_modules[0]))
    return pairs


@contextlib.contextmanager
def in_motion(unet: Any, adapter: Any, frames: int) -> Iterator[None]:
    """While inside, every UNet call takes `(clips * frames, …)` latents and mixes each clip's frames."""
    if frames > adapter.config.motion_max_seq_length:
        raise ValueError(f"the motion model draws at most {adapter.config.motion_max_seq_length} frames at once")
    handles = []
    for resnet, module in _pairs(adapter, unet):

        def hook(_module: Any, _inputs: Any, output: torch.Tensor, motion: Any = module) -> torch.Tensor:
            return motion(output, num_frames=frames)

        handles.append(resnet.register_forward_hook(hook))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
