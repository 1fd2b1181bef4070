"""A tiny Stable-Diffusion-architecture pipeline with random weights, built from config.

It has every part of SD1.x (CLIP text encoder, UNet with cross-attention, KL VAE with
downsampling factor 8, a DDIM scheduler) at a size that renders a 2x2 grid of 64 px tiles
in well under a second on two CPU cores. What makes it fast (measured on two cores): no
attention at full latent resolution — cross-attention lives only in the UNet's middle block.
Tests use it, and the engine falls back to it when the trained model folder is absent.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

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
    vae = _tiny_vae(scaling_factor=1.0)
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


def _tiny_vae(**config: Any) -> AutoencoderKL:
    """A 64 px, 8x-downsampling VAE of random weights, tamed (`_tame`) so decode(encode(x)) stays near x."""
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
        **config,
    )
    _tame(vae)
    return vae


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
    vae = _tiny_vae(scaling_factor=0.13025, force_upcast=True)  # SDXL's factor, and its float32 decode
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


def save_tiny_ip_adapter(unet: UNet2DConditionModel, path: str | os.PathLike[str], seed: int = 0) -> Path:
    """Write a random-weight IP-Adapter for `unet` as an adapter folder, built from config.

    The layout an operator's IP_ADAPTER folder has (`ip-adapter.safetensors` + `image_encoder/`),
    with the state-dict layout diffusers' own tests build: an `image_proj` (CLIP image embedding ->
    4 extra tokens) and `to_k_ip`/`to_v_ip` for every cross-attention, keyed 1, 3, 5, ...
    """
    from diffusers.models.attention_processor import IPAdapterAttnProcessor
    from diffusers.models.embeddings import ImageProjection
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

    torch.manual_seed(seed)
    path = Path(path)
    cross_dim = unet.config.cross_attention_dim
    channels = unet.config.block_out_channels
    weights: dict[str, torch.Tensor] = {}
    key_id = 1
    for name in unet.attn_processors:
        if name.endswith("attn1.processor"):
            continue  # self-attention gets no adapter
        if name.startswith("mid_block"):
            hidden = channels[-1]
        elif name.startswith("up_blocks"):
            hidden = list(reversed(channels))[int(name[len("up_blocks.")])]
        else:
            hidden = channels[int(name[len("down_blocks.")])]
        layers = IPAdapterAttnProcessor(hidden_size=hidden, cross_attention_dim=cross_dim).state_dict()
        weights[f"ip_adapter.{key_id}.to_k_ip.weight"] = layers["to_k_ip.0.weight"]
        weights[f"ip_adapter.{key_id}.to_v_ip.weight"] = layers["to_v_ip.0.weight"]
        key_id += 2
    projection = ImageProjection(cross_attention_dim=cross_dim, image_embed_dim=cross_dim, num_image_text_embeds=4)
    proj = projection.state_dict()
    weights.update(
        {
            "image_proj.proj.weight": proj["image_embeds.weight"],
            "image_proj.proj.bias": proj["image_embeds.bias"],
            "image_proj.norm.weight": proj["norm.weight"],
            "image_proj.norm.bias": proj["norm.bias"],
        }
    )
    path.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, str(path / "ip-adapter.safetensors"))
    encoder = CLIPVisionModelWithProjection(
        CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=32,
            patch_size=8,
            projection_dim=cross_dim,
        )
    )
    encoder.save_pretrained(path / "image_encoder")
    return path
