"""A tiny Stable-Diffusion-architecture pipeline with random weights, built from config.

It has every part of SD1.x (CLIP text encoder, UNet with cross-attention, KL VAE with
downsampling factor 8, a DDIM scheduler) at a size that renders a 2x2 grid of 64 px tiles
in well under a second on two CPU cores. What makes it fast (DESIGN.md, "stack"): no
attention at full latent resolution — cross-attention lives only in the UNet's middle block.
Tests use it, and the engine falls back to it when the trained model folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from diffusers import (  # noqa: E402
    AutoencoderKL,
    DDIMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection  # noqa: E402

from engine.tokenizer import build_tokenizer  # noqa: E402

TINY_WORDS = (
    *("a", "an", "the", "of", "on", "in", "with", "and", "big", "small", "background"),
    *("red", "green", "blue", "yellow", "orange", "purple", "white", "black", "pink", "brown", "grey"),
    *("circle", "square", "triangle", "star", "cross", "ring", "stripes", "dots"),
    *("dream", "galaxy", "cat", "dog", "tree", "house", "sky", "sea", "mountain", "sun", "moon", "flower"),
)


def build_tiny_pipeline(seed: int = 0) -> StableDiffusionPipeline:
    """Return a fresh random-weight SD pipeline; the same seed gives the same weights."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TINY_WORDS)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            projection_dim=32,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64, 64),
        down_block_types=("DownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "UpBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        layers_per_block=1,
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=1.0,
    )
    _tame(vae)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_sdxl_pipeline(seed: int = 0) -> StableDiffusionXLPipeline:
    """A random-weight SDXL pipeline as small as the tiny SD one: two text encoders (the second
    pooled, with projection), a UNet conditioned on text and size/crop ids, and a VAE whose config
    asks for float32 decoding (`force_upcast`), as SDXL's does."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TINY_WORDS)

    def text_config(**extra: int) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
            **extra,
        )

    text_encoder = CLIPTextModel(text_config())
    text_encoder_2 = CLIPTextModelWithProjection(text_config(projection_dim=32))
    time_embed_dim = 8
    unet = UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        attention_head_dim=(2, 4),
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=time_embed_dim,
        # six size/crop ids, each embedded to time_embed_dim, plus the pooled text embedding
        projection_class_embeddings_input_dim=6 * time_embed_dim + 32,
        cross_attention_dim=64,  # both encoders' hidden states, concatenated
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(16, 32, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        scaling_factor=0.13025,
        force_upcast=True,
    )
    _tame(vae)
    scheduler = EulerDiscreteScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", steps_offset=1, timestep_spacing="leading"
    )
    pipe = StableDiffusionXLPipeline(
        vae=vae,
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=tokenizer,
        tokenizer_2=tokenizer,
        unet=unet,
        scheduler=scheduler,
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def _tame(vae: AutoencoderKL) -> None:
    """Zero the residual branches of the random VAE so each block is its identity shortcut.

    A fully random VAE is a chaotic function: any two latents decode to unrelated noise, so no
    test could see that a Subtle variation stays closer to its source than a Strong one. With
    the residual branches zeroed, decode(encode(x)) stays related to x. It costs no speed.
    """
    for module in vae.modules():
        if type(module).__name__ == "ResnetBlock2D":
            module.conv2.weight.zero_()
            module.conv2.bias.zero_()
        elif type(module).__name__ == "Attention":
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()


def save_tiny_pipeline(path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a tiny pipeline as a diffusers folder (what `from_pretrained` reads)."""
    path = Path(path)
    build_tiny_pipeline(seed).save_pretrained(path, safe_serialization=True)
    return path
