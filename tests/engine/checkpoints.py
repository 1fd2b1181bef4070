"""Write a diffusers SDXL pipeline as one original-layout (SGM/A1111) `.safetensors` checkpoint.

What an operator downloads from a model site is this layout, not a diffusers folder. The key
mapping follows diffusers' `scripts/convert_diffusers_to_original_sdxl.py` (Apache-2.0), made
general in the number of blocks and layers (that script hard-codes SDXL's), so a tiny pipeline
built from config can be saved as such a file and loaded back through `from_single_file`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file


def _unet_prefixes(config: Any) -> list[tuple[str, str]]:
    """(original, diffusers) key prefixes for a UNet with this config, in LDM's block numbering."""
    layers = config.layers_per_block
    down, up = config.down_block_types, config.up_block_types
    pairs: list[tuple[str, str]] = []
    for i, kind in enumerate(down):
        for j in range(layers):
            n = 1 + i * (layers + 1) + j
            pairs.append((f"input_blocks.{n}.0.", f"down_blocks.{i}.resnets.{j}."))
            if "CrossAttn" in kind:
                pairs.append((f"input_blocks.{n}.1.", f"down_blocks.{i}.attentions.{j}."))
        if i < len(down) - 1:
            pairs.append((f"input_blocks.{(i + 1) * (layers + 1)}.0.op.", f"down_blocks.{i}.downsamplers.0.conv."))
    for i, kind in enumerate(up):
        for j in range(layers + 1):
            n = i * (layers + 1) + j
            pairs.append((f"output_blocks.{n}.0.", f"up_blocks.{i}.resnets.{j}."))
            if "CrossAttn" in kind:
                pairs.append((f"output_blocks.{n}.1.", f"up_blocks.{i}.attentions.{j}."))
        if i < len(up) - 1:
            slot = 2 if "CrossAttn" in kind else 1
            pairs.append((f"output_blocks.{i * (layers + 1) + layers}.{slot}.", f"up_blocks.{i}.upsamplers.0."))
    pairs += [("middle_block.1.", "mid_block.attentions.0."), ("middle_block.0.", "mid_block.resnets.0.")]
    pairs.append(("middle_block.2.", "mid_block.resnets.1."))
    return pairs


_UNET_NAMES = [
    ("time_embed.0.", "time_embedding.linear_1."),
    ("time_embed.2.", "time_embedding.linear_2."),
    ("input_blocks.0.0.", "conv_in."),
    ("out.0.", "conv_norm_out."),
    ("out.2.", "conv_out."),
    ("label_emb.0.0.", "add_embedding.linear_1."),
    ("label_emb.0.2.", "add_embedding.linear_2."),
]
_RESNET_NAMES = [
    ("in_layers.0", "norm1"),
    ("in_layers.2", "conv1"),
    ("out_layers.0", "norm2"),
    ("out_layers.3", "conv2"),
    ("emb_layers.1", "time_emb_proj"),
    ("skip_connection", "conv_shortcut"),
]


def unet_to_original(unet: Any) -> dict[str, torch.Tensor]:
    out = {}
    prefixes = _unet_prefixes(unet.config)
    for key, value in unet.state_dict().items():
        new = key
        for original, ours in _UNET_NAMES:
            if new.startswith(ours):
                new = original + new[len(ours) :]
        if "resnets" in key:
            for original, ours in _RESNET_NAMES:
                new = new.replace(ours, original)
        for original, ours in prefixes:
            if new.startswith(ours):
                new = original + new[len(ours) :]
        out["model.diffusion_model." + new] = value
    return out


def vae_to_original(vae: Any) -> dict[str, torch.Tensor]:
    blocks = len(vae.config.block_out_channels)
    layers = vae.config.layers_per_block
    pairs = [
        ("nin_shortcut", "conv_shortcut"),
        ("norm_out", "conv_norm_out"),
        ("mid.attn_1.", "mid_block.attentions.0."),
    ]
    for i in range(blocks):
        for j in range(layers):
            pairs.append((f"encoder.down.{i}.block.{j}.", f"encoder.down_blocks.{i}.resnets.{j}."))
        for j in range(layers + 1):
            pairs.append((f"decoder.up.{blocks - 1 - i}.block.{j}.", f"decoder.up_blocks.{i}.resnets.{j}."))
        if i < blocks - 1:
            pairs.append((f"down.{i}.downsample.", f"down_blocks.{i}.downsamplers.0."))
            pairs.append((f"up.{blocks - 1 - i}.upsample.", f"up_blocks.{i}.upsamplers.0."))
    pairs += [("mid.block_1.", "mid_block.resnets.0."), ("mid.block_2.", "mid_block.resnets.1.")]
    attention = [
        ("norm.", "group_norm."),
        ("q.", "to_q."),
        ("k.", "to_k."),
        ("v.", "to_v."),
        ("proj_out.", "to_out.0."),
    ]
    out = {}
    for key, value in vae.state_dict().items():
        new = key
        for original, ours in pairs:
            new = new.replace(ours, original)
        if "attentions" in key:
            for original, ours in attention:
                new = new.replace(ours, original)
            if value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv
        out["first_stage_model." + new] = value
    return out


_OPENCLIP_NAMES = [
    ("transformer.resblocks.", "text_model.encoder.layers."),
    ("ln_1", "layer_norm1"),
    ("ln_2", "layer_norm2"),
    (".c_fc.", ".fc1."),
    (".c_proj.", ".fc2."),
    (".attn", ".self_attn"),
    ("ln_final.", "text_model.final_layer_norm."),
    ("token_embedding.weight", "text_model.embeddings.token_embedding.weight"),
    ("positional_embedding", "text_model.embeddings.position_embedding.weight"),
]
_OPENCLIP_PATTERN = re.compile("|".join(re.escape(ours) for _, ours in _OPENCLIP_NAMES))
_OPENCLIP = {ours: original for original, ours in _OPENCLIP_NAMES}


def open_clip_to_original(encoder: Any) -> dict[str, torch.Tensor]:
    """A CLIPTextModelWithProjection in OpenCLIP's layout (fused q/k/v, text_projection transposed)."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[str, dict[str, list[torch.Tensor | None]]] = {}
    for key, value in encoder.state_dict().items():
        if key.endswith("position_ids"):
            continue
        match = re.match(r"(.*)\.self_attn\.([qkv])_proj\.(weight|bias)$", key)
        if match:
            parts = qkv.setdefault(match.group(1) + ".self_attn", {}).setdefault(match.group(3), [None] * 3)
            parts["qkv".index(match.group(2))] = value
            continue
        out[_OPENCLIP_PATTERN.sub(lambda m: _OPENCLIP[m.group(0)], key)] = value
    for stem, kinds in qkv.items():
        renamed = _OPENCLIP_PATTERN.sub(lambda m: _OPENCLIP[m.group(0)], stem)
        for kind, tensors in kinds.items():
            out[f"{renamed}.in_proj_{kind}"] = torch.cat([t for t in tensors if t is not None])
    out["text_projection"] = out.pop("text_projection.weight").T.contiguous()
    return {"conditioner.embedders.1.model." + k: v for k, v in out.items()}


def openai_clip_to_original(encoder: Any) -> dict[str, torch.Tensor]:
    """A CLIPTextModel as SDXL's first embedder holds it: transformers' own names under `text_model.`
    (transformers 5 leaves that prefix out of a bare CLIPTextModel's state dict)."""
    out = {}
    for key, value in encoder.state_dict().items():
        if not key.endswith("position_ids"):
            name = key if key.startswith("text_model.") else "text_model." + key
            out["conditioner.embedders.0.transformer." + name] = value
    return out


def save_sdxl_single_file(pipe: Any, path: str | Path) -> Path:
    """`pipe`'s UNet, VAE and both text encoders as one original-layout SDXL `.safetensors` file."""
    state = {
        **unet_to_original(pipe.unet),
        **vae_to_original(pipe.vae),
        **openai_clip_to_original(pipe.text_encoder),
        **open_clip_to_original(pipe.text_encoder_2),
    }
    path = Path(path)
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path
