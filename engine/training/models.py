"""Model configs for dreamgrid-tiny: a factor-8 VAE, a small CLIP text encoder and a UNet
with cross-attention at every (tiny) latent resolution plus pooled-text time conditioning."""

from __future__ import annotations

# From their own modules: diffusers' lazy top level shows type checkers attribute-less dummies.
from diffusers.models import AutoencoderKL, UNet2DConditionModel
from diffusers.schedulers.scheduling_ddpm import DDPMScheduler
from diffusers.schedulers.scheduling_euler_discrete import EulerDiscreteScheduler
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

# Zero-ish terminal SNR: the last training timestep is (almost) pure noise, which is where
# sampling starts, so flat colours are decided by the prompt, not by leaked image mean.
NOISE_SCHEDULE = dict(
    num_train_timesteps=1000,
    beta_start=0.0001,
    beta_end=0.02,
    beta_schedule="linear",
    prediction_type="v_prediction",
)


def make_vae(image_size: int = 64, channels: tuple[int, ...] = (32, 64, 64, 64)) -> AutoencoderKL:
    """Four blocks (factor 8: 64 px images are 8x8x4 latents); `channels` are their widths."""
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=4,
        norm_num_groups=16,
        sample_size=image_size,
    )


def make_text_encoder(tokenizer: CLIPTokenizer, hidden: int = 128, layers: int = 3) -> CLIPTextModel:
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 4,
        num_hidden_layers=layers,
        num_attention_heads=4,
        max_position_embeddings=tokenizer.model_max_length,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return CLIPTextModel(config)


def make_unet(
    cross_attention_dim: int = 128, latent_size: int = 8, channels: tuple[int, ...] = (64, 96, 96)
) -> UNet2DConditionModel:
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        # 8x8 -> 4x4 -> 2x2; attention at 8x8 costs little at this size. ~3.9 M parameters,
        # so the whole pipeline stays under 25 MB in float32.
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        layers_per_block=1,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=4,  # diffusers' legacy name: this is the number of heads
        norm_num_groups=32,
        # Pool the caption into the time embedding: a global signal that every resnet sees,
        # which is what flat colours need. StableDiffusionPipeline needs no extra inputs for it.
        addition_embed_type="text",
        addition_embed_type_num_heads=4,
    )


def make_train_scheduler() -> DDPMScheduler:
    return DDPMScheduler(**NOISE_SCHEDULE, clip_sample=False)


def make_sample_scheduler() -> EulerDiscreteScheduler:
    # "trailing" so 20 steps start at t=999 (pure noise) like training's last step. Euler beat
    # DPM-Solver++ and UniPC at guidance 7.5 on both held-out and seen prompts (MODEL_CARD.md).
    return EulerDiscreteScheduler(**NOISE_SCHEDULE, timestep_spacing="trailing", steps_offset=1)
