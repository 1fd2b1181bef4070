"""Model families: what differs between SD1.x/2.x, SDXL, SD3 and Flux, in one place per family.

The actions (engine/actions/) read like diffusers' own `__call__`s and run diffusers' pipelines; what
they must know of the model behind a pipeline they ask its family:

- the denoiser (`pipe.unet` or `pipe.transformer`) and whether it is a flow-matching model;
- how prompts are encoded (CLIP; CLIP + T5; whether a negative branch runs at all: Flux.1 is
  guidance-distilled, its guidance is an embedding, not classifier-free guidance);
- the latents' layout (Flux packs 2x2 patches of 16-channel latents into tokens) for --chaos noise,
  previews and decoding;
- the x0 estimate after --stop (epsilon/v-prediction for the UNets, velocity for flow matching);
- what it cannot do, as a sentence for the member (`refusals`), which `Engine.supports` answers
  before anything is queued.

The family is recognised from the pipeline's class (`of_pipeline`), a folder's `model_index.json`
(`engine.loading`) or a single file's tensor names (`engine.loading.family_of_single_file`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from engine.requests import Action, Feature, ModelHints


@dataclass(frozen=True)
class Family:
    """The SD-style UNet families; subclasses override what differs."""

    key: str  # stable id: "sd", "sdxl", "sd3", "flux", "flux-kontext"
    name: str  # as members read it: "Flux.1"
    pipeline_prefixes: tuple[str, ...]  # pipeline class names that belong to this family
    steps: int | None = None  # family defaults (ModelHints); None: the bot's STEPS / GUIDANCE_SCALE
    guidance_scale: float | None = None
    refusals: Mapping[Action | Feature, str] = field(default_factory=dict)
    ip_adapter: bool = True  # engine/actions/image_prompt.py's UNet IP-Adapter loads into it
    instruction_edit: bool = False  # an edit-by-instruction pipeline exists (Kontext, Flux.2, Qwen-Image-Edit)
    size_multiple: int = 8  # tile sides must be multiples of this
    img2img_takes_latents: bool = True  # its image-to-image pipeline accepts latents as `image` (/blend mixes them)
    # a diffusers inpainting pipeline class for Zoom/Pan/Vary (Region) where AutoPipelineForInpainting has none
    inpaint_pipeline: str | None = None
    # its edit pipeline takes one prompt a call (QwenImageEditPlusPipeline): an edit's tiles share one embedding
    one_prompt_per_call: bool = False
    # diffusers' LoRA loader takes LoRAs for it (`load_lora_weights`, `set_adapters`), tested here
    lora: bool = False
    tune: bool = False  # /tune trains LoRAs for it (engine/tune.py: a UNet with one text encoder)

    denoiser_name = "unet"
    flow_matching = False

    # -- questions -------------------------------------------------------------------------

    def supports(self, what: Action | Feature) -> str | None:
        if what in (Feature.INSTRUCTION_EDIT, Action.EDIT) and not self.instruction_edit:
            return (
                f"{self.name} models cannot edit a picture from an instruction:"
                " that takes Flux.1 Kontext, Flux.2 [klein] or Qwen-Image-Edit (try Vary (Region) or Retexture here)"
            )
        if what is Action.TUNE and not self.tune:
            return f"{self.name} models cannot be tuned in dreamgrid yet: /tune trains Stable Diffusion 1.x/2.x models"
        reason = self.refusals.get(what)
        return None if reason is None else f"{self.name} models cannot {reason}"

    def lora_refusal(self) -> str | None:
        """Why this family takes no LoRA here (a sentence naming it), or None."""
        return None if self.lora else f"{self.name} models cannot take a LoRA in dreamgrid yet"

    def hints(self) -> ModelHints:
        return ModelHints(self.name, self.steps, self.guidance_scale, self.size_multiple)

    def denoiser(self, pipe: Any) -> Any:  # a UNet2DConditionModel or a transformer
        return getattr(pipe, self.denoiser_name)

    def native_size(self, pipe: Any) -> int:
        return int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)

    def uses_cfg(self, guidance_scale: float) -> bool:
        """Whether the pipeline runs an unconditional (negative) branch at this guidance."""
        return guidance_scale > 1

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        """What a pipeline call given a plain `prompt` (a warm-up, a benchmark) needs to read it as we do."""
        return {}

    def size_kwargs(self, width: int, height: int) -> dict[str, Any]:
        """What a text-to-image call needs besides height/width to draw at exactly that size."""
        return {}

    def inpaint_kwargs(self, width: int, height: int) -> dict[str, Any]:
        """What its inpainting pipeline needs besides height/width to draw the canvas at exactly that size."""
        return {}

    def guidance_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        """The pipeline's argument for the member's guidance (Qwen-Image's CFG is `true_cfg_scale`)."""
        return {"guidance_scale": guidance_scale}

    def native_size_of_vae_config(self, config: Mapping[str, Any]) -> int | None:
        """The native size from the VAE's config where the family reads it from there (before loading)."""
        return None

    # -- prompts ---------------------------------------------------------------------------

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor]:
        """One row per prompt: the pipeline's embedding keyword arguments (the prompt's first)."""
        out = pipe.encode_prompt(
            prompt=prompts,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=negatives is not None,
            negative_prompt=negatives,
        )
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        encoded = dict(zip(names, out, strict=False))
        if negatives is not None and getattr(pipe.config, "force_zeros_for_empty_prompt", False):
            # SDXL's unconditional branch is all zeros when there is no negative prompt (as in its pipeline).
            for i, negative in enumerate(negatives):
                if not negative:
                    for name in ("negative_prompt_embeds", "negative_pooled_prompt_embeds"):
                        encoded[name][i] = 0
        return {name: t for name, t in encoded.items() if t is not None}

    def encode_instruction(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, reference: Any, device: torch.device
    ) -> dict[str, Any]:
        """`encode` for an edit by instruction of `reference` (a PIL picture): most families read the
        instruction alone and take the picture as the pipeline's `image`; Qwen-Image-Edit's text
        encoder reads both."""
        return self.encode(pipe, prompts, negatives, device)

    # -- latents ---------------------------------------------------------------------------

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        """(channels, h, w) of one image's starting noise, as the pipeline draws it."""
        channels = self.denoiser(pipe).config.in_channels
        return channels, height // pipe.vae_scale_factor, width // pipe.vae_scale_factor

    def pack(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents -> the layout the pipeline's denoising loop holds."""
        return latents

    def unpack(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        """The pipeline's latents -> (N, C, h, w), for previews and the VAE."""
        return latents

    def decode_vae(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """(N, C, h, w) latents as `unpack` gives them -> images in [-1, 1]."""
        from engine.vae import decode_latents

        return decode_latents(pipe.vae, latents)

    def noise_after_step(self, pipe: Any, t: Any) -> tuple[float, float]:
        """(a, b) with the latents after the step at timestep `t` being `a·x0 + b·ε` (--sref's target needs them)."""
        scheduler = pipe.scheduler
        index, sigmas = getattr(scheduler, "step_index", None), getattr(scheduler, "sigmas", None)
        if index is not None and sigmas is not None:  # Euler, DPM-Solver, flow matching: the next sigma
            sigma = float(sigmas[min(int(index), len(sigmas) - 1)])
            if self.flow_matching:  # x = (1 − σ)·x0 + σ·ε
                return 1.0 - sigma, sigma
            if float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0:  # Euler-style: x = x0 + σ·ε
                return 1.0, sigma
            return 1.0 / (1.0 + sigma**2) ** 0.5, sigma / (1.0 + sigma**2) ** 0.5  # variance-preserving σ
        # DDIM, DDPM, PNDM: the previous timestep's ᾱ
        previous = int(t) - scheduler.config.num_train_timesteps // max(1, scheduler.num_inference_steps)
        alpha = float(scheduler.alphas_cumprod[previous]) if previous >= 0 else 1.0
        return alpha**0.5, (1.0 - alpha) ** 0.5

    # -- --stop ----------------------------------------------------------------------------

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, torch.Tensor], guidance: float, size: Any
    ) -> torch.Tensor:
        """The clean latents predicted from `latents` (at timestep `t`) by one more denoiser pass."""
        scheduler = pipe.scheduler
        alpha = scheduler.alphas_cumprod[int(t)].to(latents.device, torch.float32)
        sigma_scheduler = float(getattr(scheduler, "init_noise_sigma", 1.0)) > 1.0  # Euler/LMS/Heun keep x = x0 + σε
        sigma = ((1 - alpha) / alpha).sqrt()
        model_in = latents / (sigma**2 + 1).sqrt() if sigma_scheduler else latents
        cfg = self.uses_cfg(guidance)
        model_in = torch.cat([model_in] * 2) if cfg else model_in
        added = {}
        if "add_text_embeds" in cond:
            added = {"text_embeds": cond["add_text_embeds"], "time_ids": cond["add_time_ids"]}
        pred = pipe.unet(
            model_in.to(pipe.unet.dtype),
            t,
            encoder_hidden_states=cond["prompt_embeds"],
            added_cond_kwargs=added or None,
            return_dict=False,
        )[0].float()
        if cfg:
            uncond, text = pred.chunk(2)
            pred = uncond + guidance * (text - uncond)
        x = latents.float()
        vp_x = x / (sigma**2 + 1).sqrt() if sigma_scheduler else x  # the sample in variance-preserving form
        if scheduler.config.prediction_type == "v_prediction":
            x0 = alpha.sqrt() * vp_x - (1 - alpha).sqrt() * pred
        else:
            x0 = (vp_x - (1 - alpha).sqrt() * pred) / alpha.sqrt()
        return x0.to(latents.dtype)


_NO_TILE_DIT = "draw seamless tiles (--tile): their transformer has no convolutions to wrap around the edges"
_NO_STYLE_YET = "take a style reference (--sref) yet: styles are drawn on Stable Diffusion 1.x/2.x and SDXL models"
# `::` parts are averaged as embeddings of one length; these families' encoders give each prompt its own.
_NO_MULTI_PROMPT = (
    "weigh the parts of a `::` multi-prompt: their text encoder gives each prompt its own length,"
    " so the parts cannot be blended (write one prompt without `::`)"
)


@dataclass(frozen=True)
class SD3Family(Family):
    """SD3 / SD3.5: an MMDiT on 16-channel latents, three text encoders, classifier-free guidance, flow matching."""

    denoiser_name = "transformer"
    flow_matching = True

    def native_size(self, pipe: Any) -> int:
        return int(pipe.transformer.config.sample_size) * int(pipe.vae_scale_factor)

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor]:
        out = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            prompt_3=None,
            device=device,
            num_images_per_prompt=1,
            do_classifier_free_guidance=negatives is not None,
            negative_prompt=negatives,
            max_sequence_length=_t5_length(getattr(pipe, "tokenizer_3", None), 256),
        )
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        return {name: t for name, t in zip(names, out, strict=True) if t is not None}

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {"max_sequence_length": _t5_length(getattr(pipe, "tokenizer_3", None), 256)}

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, torch.Tensor], guidance: float, size: Any
    ) -> torch.Tensor:
        cfg = self.uses_cfg(guidance)
        model_in = torch.cat([latents] * 2) if cfg else latents
        # the callback's embeddings: negative and positive rows already concatenated under CFG
        v = pipe.transformer(
            hidden_states=model_in,
            timestep=torch.as_tensor(t).expand(model_in.shape[0]),
            encoder_hidden_states=cond["prompt_embeds"],
            pooled_projections=cond["pooled_prompt_embeds"],
            return_dict=False,
        )[0].float()
        if cfg:
            uncond, text = v.chunk(2)
            v = uncond + guidance * (text - uncond)
        return _flow_x0(pipe, latents, t, v)


@dataclass(frozen=True)
class FluxFamily(Family):
    """Flux.1 [dev]/[schnell]: a DiT on 2x2-packed 16-channel latents, CLIP (pooled) + T5, guidance
    distilled into an embedding ([dev]; [schnell] has none), flow matching with dynamic shifting."""

    denoiser_name = "transformer"
    flow_matching = True

    def native_size(self, pipe: Any) -> int:
        return _vae_native_size(pipe.vae)

    def uses_cfg(self, guidance_scale: float) -> bool:
        return False  # guidance-distilled: no negative branch

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor]:
        prompt_embeds, pooled, _text_ids = pipe.encode_prompt(
            prompt=prompts,
            prompt_2=None,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=_t5_length(pipe.tokenizer_2, 512),
        )
        return {"prompt_embeds": prompt_embeds, "pooled_prompt_embeds": pooled}

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {"max_sequence_length": _t5_length(pipe.tokenizer_2, 512)}

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        channels = pipe.transformer.config.in_channels // 4
        factor = pipe.vae_scale_factor * 2
        return channels, 2 * (height // factor), 2 * (width // factor)

    def pack(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        n, c, h, w = latents.shape
        return pipe._pack_latents(latents, n, c, h, w)

    def unpack(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, torch.Tensor], guidance: float, size: Any
    ) -> torch.Tensor:
        width, height = size
        transformer = pipe.transformer
        n = latents.shape[0]
        prompt_embeds = cond["prompt_embeds"]
        _, h, w = self.noise_shape(pipe, width, height)
        image_ids = pipe._prepare_latent_image_ids(n, h // 2, w // 2, latents.device, latents.dtype)
        text_ids = torch.zeros(prompt_embeds.shape[1], 3, device=latents.device, dtype=latents.dtype)
        embedded = None
        if transformer.config.guidance_embeds:
            embedded = torch.full([n], guidance, device=latents.device, dtype=torch.float32)
        v = transformer(
            hidden_states=latents,
            timestep=torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000,
            guidance=embedded,
            pooled_projections=cond["pooled_prompt_embeds"],
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0].float()
        return _flow_x0(pipe, latents, t, v)


@dataclass(frozen=True)
class Flux2KleinFamily(Family):
    """Flux.2 [klein]: a DiT on 32-channel latents patchified 2x2 and batch-normalised, one Qwen3 text
    encoder (three of its layers stacked), step-distilled (no guidance), flow matching. Its pipeline's
    `image` is a set of reference images for editing, not a starting point, so image-to-image actions
    are refused (diffusers' Flux2KleinPipeline takes no strength); the instruction edit (the Edit
    button, /edit) is what that input is for. Zoom, Pan and Vary (Region) run on its own inpainting
    pipeline."""

    denoiser_name = "transformer"
    flow_matching = True

    def native_size(self, pipe: Any) -> int:
        return _vae_native_size(pipe.vae)

    def uses_cfg(self, guidance_scale: float) -> bool:
        return False  # the pipeline runs its own empty-prompt branch for the undistilled base models

    @staticmethod
    def text_layers(pipe: Any) -> tuple[int, ...]:
        """The Qwen3 layers klein reads (9, 18, 27), or the deepest a smaller encoder has."""
        depth = int(pipe.text_encoder.config.num_hidden_layers)
        return tuple(min(k, depth) for k in (9, 18, 27))

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor]:
        prompt_embeds, _text_ids = pipe.encode_prompt(
            prompt=prompts,
            device=device,
            num_images_per_prompt=1,
            max_sequence_length=_t5_length(pipe.tokenizer, 512),
            text_encoder_out_layers=self.text_layers(pipe),
        )
        return {"prompt_embeds": prompt_embeds}

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {
            "max_sequence_length": _t5_length(pipe.tokenizer, 512),
            "text_encoder_out_layers": self.text_layers(pipe),
        }

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        factor = pipe.vae_scale_factor * 2  # the pipeline packs given latents itself
        return pipe.transformer.config.in_channels, height // factor, width // factor

    def unpack(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        if latents.ndim == 4:
            return latents  # the pipeline's output: the VAE's own latents already
        n, _, channels = latents.shape
        factor = pipe.vae_scale_factor * 2
        x = latents.permute(0, 2, 1).reshape(n, channels, height // factor, width // factor)
        bn = pipe.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(x.device, x.dtype)
        return pipe._unpatchify_latents(x * std + mean)

    def decode_vae(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        vae = pipe.vae
        return vae.decode(latents.to(vae.device, vae.dtype), return_dict=False)[0]

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, torch.Tensor], guidance: float, size: Any
    ) -> torch.Tensor:
        width, height = size
        raw = latents.ndim == 4  # the pipeline hands back the VAE's own latents: make them tokens again
        if raw:
            latents = self._tokens(pipe, latents)
        n, _, channels = latents.shape
        factor = pipe.vae_scale_factor * 2
        grid = torch.empty(n, channels, height // factor, width // factor)
        image_ids = pipe._prepare_latent_ids(grid).to(latents.device)
        prompt_embeds = cond["prompt_embeds"]
        text_ids = pipe._prepare_text_ids(prompt_embeds).to(latents.device)
        v = pipe.transformer(
            hidden_states=latents,
            timestep=torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000,
            guidance=None,
            encoder_hidden_states=prompt_embeds,
            txt_ids=text_ids,
            img_ids=image_ids,
            return_dict=False,
        )[0][:, : latents.shape[1]].float()
        x0 = _flow_x0(pipe, latents, t, v)
        return self.unpack(pipe, x0, width, height) if raw else x0

    @staticmethod
    def _tokens(pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        """The VAE's (N, 32, h, w) latents -> the denoising loop's normalised (N, h/2 * w/2, 128) tokens."""
        x = pipe._patchify_latents(latents)
        bn = pipe.vae.bn
        mean = bn.running_mean.view(1, -1, 1, 1).to(x.device, x.dtype)
        std = torch.sqrt(bn.running_var.view(1, -1, 1, 1) + pipe.vae.config.batch_norm_eps).to(x.device, x.dtype)
        return pipe._pack_latents((x - mean) / std)


@dataclass(frozen=True)
class FluxKontextFamily(FluxFamily):
    """Flux.1 Kontext: Flux.1 that edits reference images by instruction; without one it draws from text."""

    def size_kwargs(self, width: int, height: int) -> dict[str, Any]:
        return {"max_area": width * height}  # it rescales every request to this area (1024² by default)

    def inpaint_kwargs(self, width: int, height: int) -> dict[str, Any]:
        # FluxKontextInpaintPipeline moves the picture to the nearest of Kontext's trained sizes unless told not to
        return {"max_area": width * height, "_auto_resize": False}


@dataclass(frozen=True)
class ZImageFamily(Family):
    """Z-Image: a single-stream DiT on 16-channel (Flux VAE) latents, a Qwen3 text encoder whose prompt
    embeddings are one tensor per prompt (its own length), guidance as `pos + g·(pos − neg)` (0: off,
    Turbo's default), flow matching with the model predicting −velocity."""

    denoiser_name = "transformer"
    flow_matching = True

    def native_size(self, pipe: Any) -> int:
        return _vae_native_size(pipe.vae)

    def uses_cfg(self, guidance_scale: float) -> bool:
        return guidance_scale > 0

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {"max_sequence_length": _t5_length(pipe.tokenizer, 512)}

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, Any]:
        positive, negative = pipe.encode_prompt(
            prompt=list(prompts),
            device=device,
            do_classifier_free_guidance=negatives is not None,
            negative_prompt=list(negatives) if negatives is not None else None,
            max_sequence_length=_t5_length(pipe.tokenizer, 512),
        )
        embeds = {"prompt_embeds": list(positive)}
        if negatives is not None:
            embeds["negative_prompt_embeds"] = list(negative)
        return embeds

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        factor = pipe.vae_scale_factor * 2
        return pipe.transformer.in_channels, 2 * (height // factor), 2 * (width // factor)

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, Any], guidance: float, size: Any
    ) -> torch.Tensor:
        transformer = pipe.transformer
        n = latents.shape[0]
        cfg = self.uses_cfg(guidance)
        timestep = (1000 - torch.as_tensor(t, device=latents.device).float().expand(n)) / 1000
        inputs = list(latents.to(transformer.dtype).unsqueeze(2).unbind(0))
        prompts = list(cond["prompt_embeds"])
        if cfg:
            inputs, prompts = inputs * 2, prompts + list(cond["negative_prompt_embeds"])
            timestep = timestep.repeat(2)
        out = transformer(inputs, timestep, prompts, return_dict=False)[0]
        pred = torch.stack([o.float() for o in out[:n]])
        if cfg:
            pred = pred + guidance * (pred - torch.stack([o.float() for o in out[n:]]))
        velocity = -pred.squeeze(2)  # the model predicts x0 − noise
        return _flow_x0(pipe, latents, t, velocity)


@dataclass(frozen=True)
class QwenImageFamily(Family):
    """Qwen-Image: an MMDiT on 2x2-packed 16-channel latents of its own 3D (video-style) VAE, normalised
    by the VAE's per-channel latents_mean/std; one Qwen2.5-VL text encoder whose embeddings come with
    a padding mask; classifier-free guidance as `true_cfg_scale` with a negative prompt (its
    `guidance_scale` is for guidance-distilled models), the guided velocity rescaled to the
    conditional one's norm; flow matching with dynamic shifting."""

    denoiser_name = "transformer"
    flow_matching = True
    native = 1328  # the model card's 1:1 size; its configs carry none

    def native_size(self, pipe: Any) -> int:
        return self.native_size_of_vae_config(pipe.vae.config)

    def native_size_of_vae_config(self, config: Mapping[str, Any]) -> int:
        # A model built here records its own under a private key (the tiny test model: 64 px).
        size = config.get("_dreamgrid_native_size")
        return int(size) if size else self.native

    def guidance_kwargs(self, guidance_scale: float) -> dict[str, Any]:
        return {"true_cfg_scale": guidance_scale}

    def prompt_kwargs(self, pipe: Any) -> dict[str, Any]:
        return {"negative_prompt": " "}  # its CFG runs only with a negative prompt (the model card's)

    def encode(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, device: torch.device
    ) -> dict[str, torch.Tensor]:
        def encoded(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            embeds, mask = pipe.encode_prompt(prompt=texts, device=device, num_images_per_prompt=1)
            if mask is None:  # (no padding: the pipeline warns unless it is given one anyway)
                mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
            return embeds, mask

        out = dict(zip(("prompt_embeds", "prompt_embeds_mask"), encoded(list(prompts)), strict=True))
        if negatives is not None:
            # an empty negative is the model card's " " (its CFG runs only with a negative prompt)
            negative = encoded([n or " " for n in negatives])
            out.update(zip(("negative_prompt_embeds", "negative_prompt_embeds_mask"), negative, strict=True))
        return out

    def noise_shape(self, pipe: Any, width: int, height: int) -> tuple[int, int, int]:
        channels = pipe.transformer.config.in_channels // 4
        factor = pipe.vae_scale_factor * 2
        return channels, 2 * (height // factor), 2 * (width // factor)

    def pack(self, pipe: Any, latents: torch.Tensor) -> torch.Tensor:
        n, c, h, w = latents.shape
        return pipe._pack_latents(latents, n, c, h, w)

    def unpack(self, pipe: Any, latents: torch.Tensor, width: int, height: int) -> torch.Tensor:
        return pipe._unpack_latents(latents, height, width, pipe.vae_scale_factor)[:, :, 0]  # drop the frame axis

    @torch.no_grad()
    def estimate_x0(
        self, pipe: Any, latents: torch.Tensor, t: Any, cond: dict[str, torch.Tensor], guidance: float, size: Any
    ) -> torch.Tensor:
        width, height = size
        n = latents.shape[0]
        factor = pipe.vae_scale_factor * 2
        shapes = [[(1, height // factor, width // factor)]] * n
        timestep = torch.as_tensor(t, device=latents.device).expand(n).to(latents.dtype) / 1000

        def velocity(embeds: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
            return pipe.transformer(
                hidden_states=latents,
                timestep=timestep,
                guidance=None,
                encoder_hidden_states_mask=mask,
                encoder_hidden_states=embeds,
                img_shapes=shapes,
                return_dict=False,
            )[0].float()

        v = velocity(cond["prompt_embeds"], cond.get("prompt_embeds_mask"))
        if self.uses_cfg(guidance) and "negative_prompt_embeds" in cond:
            negative = velocity(cond["negative_prompt_embeds"], cond.get("negative_prompt_embeds_mask"))
            guided = negative + guidance * (v - negative)
            v = guided * (v.norm(dim=-1, keepdim=True) / guided.norm(dim=-1, keepdim=True))  # as the pipeline does
        return _flow_x0(pipe, latents, t, v)


@dataclass(frozen=True)
class QwenImageEditFamily(QwenImageFamily):
    """Qwen-Image-Edit (and its 2509/2511 updates, QwenImageEditPlusPipeline): Qwen-Image trained to
    change a picture by instruction. The picture goes in twice: its VAE latents as extra tokens beside
    the noise, and the picture itself to the Qwen2.5-VL text encoder with the instruction, so the
    embeddings are made here with the picture as the pipeline would (`encode_instruction`). Its
    pipelines always take a picture: it draws nothing from a prompt alone."""

    native = 1024  # its pipelines' default output: about a megapixel at the picture's aspect

    def encode_instruction(
        self, pipe: Any, prompts: list[str], negatives: list[str] | None, reference: Any, device: torch.device
    ) -> dict[str, Any]:
        condition = self.condition_image(pipe, reference)

        def encoded(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
            rows = [pipe.encode_prompt(prompt=[text], image=condition, device=device) for text in texts]
            length = max(embeds.shape[1] for embeds, _ in rows)
            embeds = torch.cat([torch.nn.functional.pad(e, (0, 0, 0, length - e.shape[1])) for e, _ in rows])
            masks = [torch.ones(e.shape[:2], dtype=torch.long, device=e.device) if m is None else m for e, m in rows]
            return embeds, torch.cat([torch.nn.functional.pad(m, (0, length - m.shape[1])) for m in masks])

        out = dict(zip(("prompt_embeds", "prompt_embeds_mask"), encoded(list(prompts)), strict=True))
        if negatives is not None:
            negative = encoded([n or " " for n in negatives])  # the model card's " ", as for Qwen-Image
            out.update(zip(("negative_prompt_embeds", "negative_prompt_embeds_mask"), negative, strict=True))
        return out

    @staticmethod
    def condition_image(pipe: Any, reference: Any) -> Any:
        """The picture as the pipeline shows it to its text encoder: at about a megapixel (Edit), or
        384² in a list of pictures (Edit Plus, which reads up to three)."""
        from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit, pipeline_qwenimage_edit_plus

        plus = of_pipeline(pipe).one_prompt_per_call
        area = pipeline_qwenimage_edit_plus.CONDITION_IMAGE_SIZE if plus else 1024 * 1024
        width, height, _ = pipeline_qwenimage_edit.calculate_dimensions(area, reference.width / reference.height)
        image = pipe.image_processor.resize(reference, height, width)
        return [image] if plus else image


def _flow_x0(pipe: Any, latents: torch.Tensor, t: Any, velocity: torch.Tensor) -> torch.Tensor:
    """Flow matching: x_t = (1 - σ) x0 + σ ε and the model predicts v = ε - x0, so x0 = x_t - σ v."""
    sigma = float(t) / pipe.scheduler.config.num_train_timesteps
    return (latents.float() - sigma * velocity).to(latents.dtype)


def _t5_length(tokenizer: Any, most: int) -> int:
    """T5 prompts are padded to this many tokens: the pipeline's maximum, or the tokenizer's if shorter."""
    if tokenizer is None:
        return most
    return max(1, min(most, int(tokenizer.model_max_length)))


def _vae_native_size(vae: Any) -> int:
    native = vae.config.sample_size
    return int(native[0] if isinstance(native, (list, tuple)) else native)


SD = Family(
    key="sd",
    name="Stable Diffusion 1.x/2.x",
    pipeline_prefixes=("StableDiffusionPipeline", "StableDiffusionImg2Img", "StableDiffusionInpaint"),
    lora=True,
    tune=True,
)
SDXL = Family(key="sdxl", name="Stable Diffusion XL", pipeline_prefixes=("StableDiffusionXL",), lora=True)
SD3 = SD3Family(
    key="sd3",
    name="Stable Diffusion 3",
    pipeline_prefixes=("StableDiffusion3",),
    steps=28,
    guidance_scale=4.5,
    refusals={Feature.TILE: _NO_TILE_DIT, Feature.STYLE_REFERENCE: _NO_STYLE_YET},
    ip_adapter=False,
    size_multiple=16,  # its transformer's 2x2 patches of 8x latents: the pipeline refuses other sizes
)
FLUX = FluxFamily(
    key="flux",
    name="Flux.1",
    pipeline_prefixes=("FluxPipeline", "FluxImg2ImgPipeline", "FluxInpaintPipeline"),
    steps=28,
    guidance_scale=3.5,
    refusals={
        Feature.TILE: _NO_TILE_DIT,
        Feature.NEGATIVE_PROMPT: "take a negative prompt (--no): their guidance is distilled into the model,"
        " there is no unconditional branch to steer away from",
        Feature.STYLE_REFERENCE: _NO_STYLE_YET,
    },
    ip_adapter=False,
    size_multiple=16,
)
# [schnell]: the same architecture without a guidance embedding, distilled to a few steps.
FLUX_SCHNELL = FluxFamily(
    key="flux-schnell",
    name="Flux.1 [schnell]",
    pipeline_prefixes=(),
    steps=4,
    guidance_scale=0.0,
    refusals=FLUX.refusals,
    ip_adapter=False,
    size_multiple=16,
)
# Kontext: Flux.1 that edits a reference image by instruction (the Edit button); it inpaints on its own pipeline.
FLUX_KONTEXT = FluxKontextFamily(
    key="flux-kontext",
    name="Flux.1 Kontext",
    pipeline_prefixes=("FluxKontext",),
    steps=28,
    guidance_scale=2.5,
    refusals={
        **FLUX.refusals,
        Action.VARIATION: "make strength variations: Kontext's image input is a reference, not a start",
        Action.UPSCALE: "upscale: Kontext's image input is a reference, not a start",
        Action.BLEND: "blend: Kontext's image input is a reference, not a start",
        Action.IMAGE_PROMPT: "take an image prompt: Kontext's image input is a reference, not a start",
    },
    ip_adapter=False,
    instruction_edit=True,
    size_multiple=16,
    inpaint_pipeline="FluxKontextInpaintPipeline",  # Zoom, Pan and Vary (Region); not in AutoPipelineForInpainting
)

_REFERENCE_NOT_START = "its image input is a set of reference pictures to edit by instruction, not a starting point"
FLUX2_KLEIN = Flux2KleinFamily(
    key="flux2-klein",
    name="Flux.2 [klein]",
    pipeline_prefixes=("Flux2KleinPipeline", "Flux2KleinInpaintPipeline"),
    steps=4,
    guidance_scale=1.0,
    refusals={
        Feature.TILE: _NO_TILE_DIT,
        Feature.NEGATIVE_PROMPT: "take a negative prompt (--no): the distilled models have no unconditional branch",
        Feature.STYLE_REFERENCE: _NO_STYLE_YET,
        Action.VARIATION: f"make strength variations: {_REFERENCE_NOT_START} (its pipeline has no strength;"
        " try Edit, or Vary (Region))",
        Action.UPSCALE: f"upscale: {_REFERENCE_NOT_START} (its pipeline has no strength)",
        Action.BLEND: f"blend: {_REFERENCE_NOT_START}",
        Action.IMAGE_PROMPT: f"take an image prompt: {_REFERENCE_NOT_START} (try /edit with your picture)",
    },
    ip_adapter=False,
    instruction_edit=True,
    size_multiple=16,
    inpaint_pipeline="Flux2KleinInpaintPipeline",  # not in AutoPipelineForInpainting's table
)

Z_IMAGE = ZImageFamily(
    key="z-image",
    name="Z-Image",
    pipeline_prefixes=("ZImagePipeline", "ZImageImg2ImgPipeline", "ZImageInpaintPipeline"),
    steps=8,  # Z-Image-Turbo's, with no guidance
    guidance_scale=0.0,
    refusals={
        Feature.TILE: _NO_TILE_DIT,
        Feature.STYLE_REFERENCE: _NO_STYLE_YET,
        Feature.MULTI_PROMPT: _NO_MULTI_PROMPT,
    },
    ip_adapter=False,
    size_multiple=16,
    img2img_takes_latents=False,
)

QWEN_IMAGE = QwenImageFamily(
    key="qwen-image",
    name="Qwen-Image",
    pipeline_prefixes=("QwenImagePipeline", "QwenImageImg2ImgPipeline", "QwenImageInpaintPipeline"),
    steps=50,  # the model card's, with true_cfg_scale 4
    guidance_scale=4.0,
    refusals={
        Feature.TILE: _NO_TILE_DIT,
        Feature.STYLE_REFERENCE: _NO_STYLE_YET,
        Feature.MULTI_PROMPT: _NO_MULTI_PROMPT,
    },
    ip_adapter=False,
    size_multiple=16,
    img2img_takes_latents=False,
)

_PICTURE_TO_EDIT = "its image input is the picture to edit by instruction, not a starting point"
_QWEN_EDIT_REFUSALS: dict[Action | Feature, str] = {
    Feature.TILE: _NO_TILE_DIT,
    Feature.STYLE_REFERENCE: _NO_STYLE_YET,
    Feature.MULTI_PROMPT: _NO_MULTI_PROMPT,
    Action.IMAGINE: "draw from a prompt alone: they change a picture they are given (Edit, or /edit with"
    " your own picture)",
    Action.VARIATION: f"make strength variations: {_PICTURE_TO_EDIT}",
    Action.UPSCALE: f"upscale: {_PICTURE_TO_EDIT}",
    Action.BLEND: f"blend: {_PICTURE_TO_EDIT}",
    Action.IMAGE_PROMPT: f"take an image prompt: {_PICTURE_TO_EDIT}",
    Action.INPAINT: "redraw a region (Vary (Region)): dreamgrid runs them for edits by instruction only",
    Action.OUTPAINT: "zoom out or pan: dreamgrid runs them for edits by instruction only",
}
QWEN_IMAGE_EDIT = QwenImageEditFamily(
    key="qwen-image-edit",
    name="Qwen-Image-Edit",
    pipeline_prefixes=("QwenImageEditPipeline",),
    steps=50,  # the model card's, with true_cfg_scale 4
    guidance_scale=4.0,
    refusals=_QWEN_EDIT_REFUSALS,
    ip_adapter=False,
    instruction_edit=True,
    size_multiple=16,
    img2img_takes_latents=False,
)
# The 2509 and 2511 models: the same shape, a pipeline that reads up to three pictures and one prompt a call.
QWEN_IMAGE_EDIT_PLUS = QwenImageEditFamily(
    key="qwen-image-edit-plus",
    name="Qwen-Image-Edit-2509/2511",
    pipeline_prefixes=("QwenImageEditPlusPipeline",),
    steps=40,  # the 2509 model card's, with true_cfg_scale 4
    guidance_scale=4.0,
    refusals={
        **_QWEN_EDIT_REFUSALS,
        Feature.CHAOS: "spread an edit's four pictures apart with --chaos: their pipeline takes one prompt a"
        " call, so the four share one",
    },
    ip_adapter=False,
    instruction_edit=True,
    size_multiple=16,
    img2img_takes_latents=False,
    one_prompt_per_call=True,
)

FAMILIES: tuple[Family, ...] = (
    *(SD, SDXL, SD3, FLUX, FLUX_SCHNELL, FLUX_KONTEXT, FLUX2_KLEIN, Z_IMAGE),
    *(QWEN_IMAGE, QWEN_IMAGE_EDIT, QWEN_IMAGE_EDIT_PLUS),
)
BY_KEY: dict[str, Family] = {f.key: f for f in FAMILIES}

# Pipeline classes of families dreamgrid knows of but does not render yet, by model_index.json class name.
NOT_YET = {
    "Flux2": "Flux.2 [dev]",
    "QwenImageEditInpaint": "Qwen-Image-Edit inpainting",
    "QwenImageLayered": "Qwen-Image-Layered",
    "QwenImageControlNet": "Qwen-Image ControlNet",
    "QwenImage": "other Qwen-Image",  # (QwenImage21Pipeline and whatever comes next)
    "ZImageOmni": "Z-Image Omni",
    "Chroma": "Chroma",
}


def of_class_name(class_name: str) -> Family | None:
    """The family of a pipeline class (a model_index.json `_class_name`), or None if dreamgrid has none."""
    for family in FAMILIES:
        if any(class_name.startswith(prefix) for prefix in family.pipeline_prefixes):
            return family
    if class_name.startswith("StableDiffusion") and "3" not in class_name and "XL" not in class_name:
        return SD  # StableDiffusionPipeline's siblings
    return None


def of_pipeline(pipe: Any) -> Family:
    """The family of a loaded pipeline; [schnell] is told from [dev] by its missing guidance embedding."""
    family = of_class_name(type(pipe).__name__)
    if family is None:
        raise ValueError(f"{type(pipe).__name__} is not a pipeline of a family dreamgrid can render")
    if family is FLUX and not pipe.transformer.config.guidance_embeds:
        return FLUX_SCHNELL
    return family


def unsupported_reason(class_name: str) -> str:
    """The sentence for a model whose pipeline class no family here renders."""
    for prefix, name in NOT_YET.items():
        if class_name.startswith(prefix):
            return f"{name} models are not supported by dreamgrid yet"
    return (
        f"{class_name} models are not supported by dreamgrid"
        " (it renders SD1.x/2.x, SDXL, SD3, Flux.1, Flux.2 [klein], Z-Image, Qwen-Image and Qwen-Image-Edit)"
    )
