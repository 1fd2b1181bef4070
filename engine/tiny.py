"""Tiny pipelines of every model family with random weights, built from config.

`build_tiny_pipeline` has every part of SD1.x (CLIP text encoder, UNet with cross-attention, KL VAE with
downsampling factor 8, a DDIM scheduler) at a size that renders a 2x2 grid of 64 px tiles
in well under a second on two CPU cores. What makes it fast (measured on two cores): no
attention at full latent resolution — cross-attention lives only in the UNet's middle block.
Tests use it, and the engine falls back to it when the trained model folder is absent.
`build_tiny_sdxl_pipeline`, `build_tiny_sd3_pipeline`, `build_tiny_flux_pipeline` are the other
families at the same size (one transformer layer, 16 latent channels for SD3 and Flux, the same
8x VAE), and `build(family, folder)` saves any of them as a diffusers folder.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# From their modules rather than `diffusers`' lazy top level, whose names type checkers see as empty.
from diffusers.models import (  # noqa: E402
    AutoencoderKL,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    UNet2DConditionModel,
)
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion import StableDiffusionPipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import StableDiffusion3Pipeline  # noqa: E402
from diffusers.pipelines.stable_diffusion_xl.pipeline_stable_diffusion_xl import (  # noqa: E402
    StableDiffusionXLPipeline,
)
from diffusers.schedulers import (  # noqa: E402
    DDIMScheduler,
    EulerDiscreteScheduler,
    FlowMatchEulerDiscreteScheduler,
)
from transformers import (  # noqa: E402
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    T5Config,
    T5EncoderModel,
)

from engine.tokenizer import build_chat_tokenizer, build_t5_tokenizer, build_tokenizer  # noqa: E402

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
    # diffusers annotates `scheduler` with an enum of names and leaves out the None its docs allow.
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,  # type: ignore[arg-type]
        safety_checker=None,  # type: ignore[arg-type]
        feature_extractor=None,  # type: ignore[arg-type]
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
        layers_per_block=1,
        norm_num_groups=8,
        sample_size=64,
        **{"latent_channels": 4, **config},
    )
    _tame(vae)
    return vae


def build_tiny_sdxl_pipeline(
    seed: int = 0, *, second_encoder_width: int = 32, tokenizer: Any = None
) -> StableDiffusionXLPipeline:
    """A random-weight SDXL pipeline as small as the tiny SD one: two text encoders (the second
    pooled, with projection), a UNet conditioned on text and size/crop ids, and a VAE whose config
    asks for float32 decoding (`force_upcast`), as SDXL's does.

    `second_encoder_width`: a single-file loader tells SDXL's two encoders apart by their widths
    (768 and 1280 in SDXL), so a checkpoint of this model needs them to differ. `tokenizer`: both
    encoders' (default: a small one over the tiny words; `engine.tokenizer.clip_tokenizer()` is CLIP's)."""
    torch.manual_seed(seed)
    tokenizer = tokenizer or build_tokenizer(TINY_WORDS)

    def text_config(hidden_size: int = 32, **extra: Any) -> CLIPTextConfig:
        return CLIPTextConfig(
            vocab_size=len(tokenizer),
            hidden_size=hidden_size,
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
    text_encoder_2 = CLIPTextModelWithProjection(text_config(hidden_size=second_encoder_width, projection_dim=32))
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
        cross_attention_dim=32 + second_encoder_width,  # both encoders' hidden states, concatenated
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
        scheduler=scheduler,  # type: ignore[arg-type]  # annotated with an enum of scheduler names
        force_zeros_for_empty_prompt=True,
        add_watermarker=False,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


@torch.no_grad()
def _tame(vae: Any) -> None:
    """Zero the residual branches of the random VAE so each block is its identity shortcut.

    A fully random VAE is a chaotic function: any two latents decode to unrelated noise, so no
    test could see that a Subtle variation stays closer to its source than a Strong one. With
    the residual branches zeroed, decode(encode(x)) stays related to x. It costs no speed.
    """
    for module in vae.modules():
        if type(module).__name__ in ("ResnetBlock2D", "QwenImageResidualBlock"):
            module.conv2.weight.zero_()
            module.conv2.bias.zero_()
        elif type(module).__name__ == "Attention":
            module.to_out[0].weight.zero_()
            module.to_out[0].bias.zero_()
        elif type(module).__name__ == "QwenImageAttentionBlock":
            module.proj.weight.zero_()
            module.proj.bias.zero_()


def _tiny_t5(tokenizer: Any, d_model: int) -> T5EncoderModel:
    """A one-layer T5 encoder for `tokenizer` (T5's pad id 0 and `</s>`)."""
    return T5EncoderModel(
        T5Config(
            vocab_size=len(tokenizer),
            d_model=d_model,
            d_kv=8,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            relative_attention_num_buckets=8,
            dropout_rate=0.0,  # T5's default 0.1 is training's: a model built from config starts in training mode
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
    )


def _tiny_clip_config(tokenizer: Any, **extra: Any) -> CLIPTextConfig:
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


def _flow_vae() -> AutoencoderKL:
    """SD3's and Flux's VAE shape: 16 latent channels, no quant convs, a `shift_factor` (nonzero, so
    every encode and decode of ours is tested to apply it)."""
    return _tiny_vae(
        latent_channels=16, scaling_factor=1.0, shift_factor=0.1, use_quant_conv=False, use_post_quant_conv=False
    )


def build_tiny_sd3_pipeline(seed: int = 0) -> StableDiffusion3Pipeline:
    """A random-weight SD3-shaped pipeline: an MMDiT of one joint block (patch 2, 16 latent channels),
    two CLIP encoders with projection and a T5 encoder, flow matching."""
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TINY_WORDS)
    t5_tokenizer = build_t5_tokenizer(TINY_WORDS)
    text_encoder = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, projection_dim=32))
    text_encoder_2 = CLIPTextModelWithProjection(_tiny_clip_config(tokenizer, projection_dim=32))
    text_encoder_3 = _tiny_t5(t5_tokenizer, d_model=64)  # as wide as both CLIPs' hidden states together
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=16,
        out_channels=16,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=4,
        joint_attention_dim=64,
        caption_projection_dim=32,  # the transformer's width: heads x head dim
        pooled_projection_dim=64,  # both CLIPs' projections together
        pos_embed_max_size=32,  # up to 512 px
    )
    vae = _flow_vae()
    pipe: Any = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=tokenizer,
        text_encoder_3=text_encoder_3,
        tokenizer_3=t5_tokenizer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_flux_pipeline(seed: int = 0, *, guidance_embeds: bool = True) -> FluxPipeline:
    """A random-weight Flux.1-shaped pipeline: one double and one single stream block over 2x2-packed
    16-channel latents, CLIP (pooled) and T5 text encoders, flow matching with dynamic shifting.

    `guidance_embeds=True` is [dev]'s shape (guidance distilled into an embedding); False is [schnell]'s.
    """
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TINY_WORDS)
    t5_tokenizer = build_t5_tokenizer(TINY_WORDS)
    text_encoder = CLIPTextModel(_tiny_clip_config(tokenizer, projection_dim=32))
    text_encoder_2 = _tiny_t5(t5_tokenizer, d_model=32)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,  # 16 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,  # T5's width
        pooled_projection_dim=32,  # CLIP's pooled output
        guidance_embeds=guidance_embeds,
        axes_dims_rope=(4, 4, 8),  # sums to the head dim
    )
    vae = _flow_vae()
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15, base_image_seq_len=256
    )
    pipe: Any = FluxPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        text_encoder_2=text_encoder_2,
        tokenizer_2=t5_tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_flux_kontext_pipeline(seed: int = 0) -> Any:
    """The tiny Flux.1 pipeline's parts as Flux.1 Kontext (the same architecture, trained to edit)."""
    from diffusers import FluxKontextPipeline

    pipe: Any = FluxKontextPipeline(**build_tiny_flux_pipeline(seed).components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_qwen3_config(tokenizer: Any) -> Any:
    """A two-layer Qwen3 text encoder of width 16 over `tokenizer`'s vocabulary (klein's, Z-Image's)."""
    from transformers import Qwen3Config

    return Qwen3Config(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        head_dim=8,
        max_position_embeddings=64,
        pad_token_id=tokenizer.pad_token_id,
    )


def build_tiny_flux2_klein_pipeline(seed: int = 0) -> Any:
    """A random-weight Flux.2 [klein]-shaped pipeline: one double and one single stream block over
    32-channel latents (patchified 2x2, batch-normalised), a two-layer Qwen3 text encoder, step-distilled."""
    from diffusers import AutoencoderKLFlux2, Flux2KleinPipeline, Flux2Transformer2DModel
    from transformers import Qwen3ForCausalLM

    torch.manual_seed(seed)
    # klein wraps the prompt in its encoder's chat template; a plain one suffices for a word-level vocabulary
    tokenizer = build_chat_tokenizer(TINY_WORDS)
    text_encoder = Qwen3ForCausalLM(_tiny_qwen3_config(tokenizer))
    transformer = Flux2Transformer2DModel(
        patch_size=1,
        in_channels=128,  # 32 latent channels x a 2x2 patch
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=48,  # three Qwen3 layers of 16, stacked
        timestep_guidance_channels=256,
        axes_dims_rope=(4, 4, 4, 4),
        guidance_embeds=False,
    )
    vae = AutoencoderKLFlux2(
        block_out_channels=(16, 32, 32, 32),
        layers_per_block=1,
        latent_channels=32,
        norm_num_groups=8,
        sample_size=64,
        use_quant_conv=False,
        use_post_quant_conv=False,
    )
    _tame(vae)
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    pipe: Any = Flux2KleinPipeline(
        scheduler=scheduler,
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
        is_distilled=True,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_z_image_pipeline(seed: int = 0) -> Any:
    """A random-weight Z-Image-shaped pipeline: a single-stream DiT of one layer (patch 2, 16 latent
    channels, the Flux VAE's shape), a two-layer Qwen3 text encoder, flow matching."""
    from diffusers import ZImagePipeline, ZImageTransformer2DModel
    from transformers import Qwen3Model

    torch.manual_seed(seed)
    tokenizer = build_chat_tokenizer(TINY_WORDS)
    text_encoder = Qwen3Model(_tiny_qwen3_config(tokenizer))
    transformer: Any = ZImageTransformer2DModel(
        all_patch_size=(2,),
        all_f_patch_size=(1,),
        in_channels=16,
        dim=32,
        n_layers=1,
        n_refiner_layers=1,
        n_heads=2,
        n_kv_heads=2,
        norm_eps=1e-5,
        qk_norm=True,
        cap_feat_dim=16,  # the text encoder's width
        rope_theta=256.0,
        t_scale=1000.0,
        axes_dims=(8, 4, 4),  # sums to the head dim
        axes_lens=(256, 32, 32),
    )
    with torch.no_grad():  # uninitialised memory otherwise (diffusers' own tests set them too)
        transformer.x_pad_token.copy_(torch.ones_like(transformer.x_pad_token))
        transformer.cap_pad_token.copy_(torch.ones_like(transformer.cap_pad_token))
    pipe: Any = ZImagePipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=_flow_vae(),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# The words of Qwen-Image's system prompt, so its prefix tokenizes to the count the pipeline drops.
QWEN_TEMPLATE_WORDS = (
    *("system", "describe", "image", "by", "detailing", "color", "shape", "size", "texture", "quantity"),
    *("text", "spatial", "relationships", "objects"),
)


def build_tiny_qwen_image_pipeline(seed: int = 0) -> Any:
    """A random-weight Qwen-Image-shaped pipeline: an MMDiT of one layer over 2x2-packed 16-channel
    latents, its 3D VAE (8x, latents_mean/std that are not 0/1, so every decode of ours is tested to
    apply them), a two-layer Qwen2.5-VL text encoder (the shape of diffusers' own test), flow matching."""
    from diffusers import QwenImagePipeline

    pipe: Any = QwenImagePipeline(**_tiny_qwen_components(seed))
    _check_qwen_template(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Words of the instructions the tests give an edit (any other word is one unknown token, enough here).
EDIT_WORDS = ("make", "it", "night", "add", "snow", "remove", "hat")


def build_tiny_qwen_image_edit_pipeline(seed: int = 0, *, plus: bool = False) -> Any:
    """A random-weight Qwen-Image-Edit-shaped pipeline (`plus`: QwenImageEditPlusPipeline, the
    2509/2511 models'): the tiny Qwen-Image parts, whose Qwen2.5-VL vision tower now reads the picture
    through a Qwen2-VL processor (`engine.loading.PictureQwenProcessor`) that shrinks it to at most
    16 patches of 28 px, so an edit's text encoder sees a handful of picture tokens."""
    from diffusers import QwenImageEditPipeline, QwenImageEditPlusPipeline
    from transformers.models.qwen2_vl import Qwen2VLImageProcessorPil

    from engine.loading import PictureQwenProcessor

    components = _tiny_qwen_components(seed, EDIT_WORDS)
    pictures = Qwen2VLImageProcessorPil(min_pixels=4 * 28 * 28, max_pixels=16 * 28 * 28)
    processor = PictureQwenProcessor(image_processor=pictures, tokenizer=components["tokenizer"])
    pipeline_class = QwenImageEditPlusPipeline if plus else QwenImageEditPipeline
    pipe: Any = pipeline_class(**components, processor=processor)
    _check_qwen_template(pipe)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _tiny_qwen_components(seed: int, extra_words: tuple[str, ...] = ()) -> dict[str, Any]:
    from diffusers import AutoencoderKLQwenImage, QwenImageTransformer2DModel
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from engine.tokenizer import build_qwen_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_qwen_tokenizer((*TINY_WORDS, *QWEN_TEMPLATE_WORDS, *extra_words))
    # transformers' Qwen2.5-VL config stubs leave out the text fields it takes as keywords.
    qwen_config: Any = Qwen2_5_VLConfig
    text_encoder = Qwen2_5_VLForConditionalGeneration(
        qwen_config(
            text_config={
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_hidden_layers": 2,
                "num_attention_heads": 2,
                "num_key_value_heads": 2,
                "rope_scaling": {"mrope_section": [1, 1, 2], "rope_type": "default", "type": "default"},
                "rope_theta": 1000000.0,
                "vocab_size": len(tokenizer),
                "max_position_embeddings": 256,
            },
            vision_config={
                "depth": 1,
                "hidden_size": 16,
                "intermediate_size": 16,
                "num_heads": 2,
                "out_hidden_size": 16,
            },
            hidden_size=16,
            vocab_size=len(tokenizer),
            pad_token_id=tokenizer.pad_token_id,
            image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
            video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
            vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
            vision_end_token_id=tokenizer.convert_tokens_to_ids("<|vision_end|>"),
        )
    )
    transformer = QwenImageTransformer2DModel(
        patch_size=2,
        in_channels=64,  # 16 latent channels x a 2x2 patch
        out_channels=16,
        num_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=16,  # the text encoder's width
        guidance_embeds=False,
        axes_dims_rope=(8, 4, 4),  # sums to the head dim
    )
    vae = AutoencoderKLQwenImage(
        base_dim=16,
        z_dim=16,
        dim_mult=[1, 2, 2, 2],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],  # three downsamplings: 8x, as Qwen-Image's
        latents_mean=[0.1] * 16,
        latents_std=[5.0] * 16,
    )
    vae.register_to_config(_dreamgrid_native_size=64)  # type: ignore[attr-defined]  # ConfigMixin's, untyped there  # its configs carry no size (engine.family.QwenImageFamily)
    _tame(vae)
    return {
        "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True),
        "vae": vae,
        "text_encoder": text_encoder,
        "tokenizer": tokenizer,
        "transformer": transformer,
    }


def _check_qwen_template(pipe: Any) -> None:
    """The pipeline drops its system prompt's tokens by count: the tiny tokenizer must count them as Qwen2's."""
    prefix = pipe.prompt_template_encode.split("{}")[0].split("<|vision_start|>")[0]
    if len(pipe.tokenizer(prefix).input_ids) != pipe.prompt_template_encode_start_idx:
        raise RuntimeError("the tiny Qwen tokenizer must read the system prompt as Qwen2's does")


def build_tiny_wan_i2v_pipeline(seed: int = 0) -> Any:
    """A tiny Wan 2.2-shaped image-to-video pipeline (diffusers' own test config: 3D causal VAE with
    16 latent channels, 4x temporal compression, a transformer reading noise + picture latents + mask),
    with no CLIP image encoder, as Wan 2.2's image-to-video models have none. 16 px frames."""
    from diffusers.models import AutoencoderKLWan, WanTransformer3DModel
    from diffusers.pipelines.wan.pipeline_wan_i2v import WanImageToVideoPipeline
    from diffusers.schedulers import UniPCMultistepScheduler

    torch.manual_seed(seed)
    vae = AutoencoderKLWan(
        base_dim=3, z_dim=16, dim_mult=[1, 1, 1, 1], num_res_blocks=1, temperal_downsample=[False, True, True]
    )
    scheduler = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0)
    tokenizer = build_t5_tokenizer(TINY_WORDS)
    text_encoder = _tiny_t5(tokenizer, d_model=32)
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=2,
        attention_head_dim=12,
        in_channels=36,
        out_channels=16,
        text_dim=32,
        freq_dim=256,
        ffn_dim=32,
        num_layers=2,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
        rope_max_seq_len=32,
    )
    # Wan's T5 is a UMT5 and its scheduler usually Flow Match Euler: these tiny stand-ins have their shapes.
    components: dict[str, Any] = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
        "transformer": transformer,
        "image_encoder": None,  # Wan 2.2's image-to-video models read the picture through the VAE only
        "image_processor": None,
    }
    pipe = WanImageToVideoPipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_tiny_ltx_i2v_pipeline(seed: int = 0) -> Any:
    """A tiny LTX-Video-shaped image-to-video pipeline (diffusers' own test config: 8 latent channels,
    a one-layer transformer, a T5 prompt)."""
    from diffusers.models import AutoencoderKLLTXVideo, LTXVideoTransformer3DModel
    from diffusers.pipelines.ltx.pipeline_ltx_image2video import LTXImageToVideoPipeline

    torch.manual_seed(seed)
    transformer = LTXVideoTransformer3DModel(
        in_channels=8,
        out_channels=8,
        patch_size=1,
        patch_size_t=1,
        num_attention_heads=4,
        attention_head_dim=8,
        cross_attention_dim=32,
        num_layers=1,
        caption_channels=32,
    )
    vae = AutoencoderKLLTXVideo(
        in_channels=3,
        out_channels=3,
        latent_channels=8,
        block_out_channels=(8, 8, 8, 8),
        decoder_block_out_channels=(8, 8, 8, 8),
        layers_per_block=(1, 1, 1, 1, 1),
        decoder_layers_per_block=(1, 1, 1, 1, 1),
        spatio_temporal_scaling=(True, True, False, False),
        decoder_spatio_temporal_scaling=(True, True, False, False),
        decoder_inject_noise=(False, False, False, False, False),
        upsample_residual=(False, False, False, False),
        upsample_factor=(1, 1, 1, 1),
        timestep_conditioning=False,
        patch_size=1,
        patch_size_t=1,
        encoder_causal=True,
        decoder_causal=False,
    )
    vae.use_framewise_encoding = False
    vae.use_framewise_decoding = False
    tokenizer = build_t5_tokenizer(TINY_WORDS)
    pipe = LTXImageToVideoPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=_tiny_t5(tokenizer, d_model=32),
        tokenizer=tokenizer,
        transformer=transformer,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


# Image-to-video pipelines (VIDEO_MODEL), for Animate's tests: the same code path as an operator's folder.
TINY_VIDEO_BUILDERS: dict[str, Callable[..., Any]] = {
    "wan": build_tiny_wan_i2v_pipeline,
    "ltx": build_tiny_ltx_i2v_pipeline,
}


TINY_BUILDERS: dict[str, Callable[..., Any]] = {
    "sd": build_tiny_pipeline,
    "sdxl": build_tiny_sdxl_pipeline,
    "sd3": build_tiny_sd3_pipeline,
    "flux": build_tiny_flux_pipeline,
    "flux-schnell": lambda seed=0: build_tiny_flux_pipeline(seed, guidance_embeds=False),
    "flux-kontext": lambda seed=0: build_tiny_flux_kontext_pipeline(seed),
    "flux2-klein": build_tiny_flux2_klein_pipeline,
    "z-image": build_tiny_z_image_pipeline,
    "qwen-image": build_tiny_qwen_image_pipeline,
    "qwen-image-edit": build_tiny_qwen_image_edit_pipeline,
    "qwen-image-edit-plus": lambda seed=0: build_tiny_qwen_image_edit_pipeline(seed, plus=True),
}


def build(family: str, folder: str | os.PathLike[str], seed: int = 0) -> Path:
    """Save the tiny pipeline of `family` (a key of TINY_BUILDERS) as a diffusers folder."""
    if family not in TINY_BUILDERS:
        raise ValueError(f"no tiny pipeline for family {family!r} (have: {', '.join(TINY_BUILDERS)})")
    path = Path(folder)
    TINY_BUILDERS[family](seed=seed).save_pretrained(path, safe_serialization=True)
    index = json.loads((path / "model_index.json").read_text())
    if "processor" in index:  # recorded as a real Qwen-Image-Edit folder records it (engine.loading loads either)
        index["processor"] = ["transformers", "Qwen2VLProcessor"]
        (path / "model_index.json").write_text(json.dumps(index, indent=2))
    return path


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
    cross_dim = unet.config["cross_attention_dim"]
    channels = unet.config["block_out_channels"]
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


def save_tiny_lora(pipe: Any, path: str | os.PathLike[str], seed: int = 0, rank: int = 4) -> Path:
    """A random LoRA for `pipe`'s UNet attention (both matrices random, so it visibly changes the
    picture), written as a diffusers LoRA file: what a LORAS entry or a /tune result is."""
    from peft import LoraConfig

    from engine.tune import TARGET_MODULES, base_unet, save_lora

    torch.manual_seed(seed)
    unet = base_unet(pipe.unet)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False, target_modules=list(TARGET_MODULES)))
    return save_lora(type(pipe), unet, path)
