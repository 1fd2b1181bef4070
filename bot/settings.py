"""Settings, read once from the environment and `.env`, then handed down explicitly."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.moderation import PatternRefused, compile_rule, is_pattern, split_list
from engine.params import LORA_NAME, TUNE_STEPS
from engine.requests import ModelHints


class ModelDefaults(BaseModel):
    """What one model runs with unless a prompt or /settings says otherwise (e.g. a turbo model)."""

    model_config = ConfigDict(extra="forbid")

    steps: int | None = Field(default=None, ge=1, le=150)  # at --q 1, instead of STEPS
    guidance_scale: float | None = Field(default=None, ge=0, le=30)  # at --stylize 100, instead of GUIDANCE_SCALE
    # The tile edge at 1:1, instead of the one the model was trained at.
    size: int | None = Field(default=None, ge=64, le=2048, multiple_of=8)
    scheduler: str | None = None  # a diffusers scheduler class, e.g. EulerAncestralDiscreteScheduler
    # how far Zoom Out, Make Square and Pan re-noise the new area, instead of the model's own or 0.45
    new_area_strength: float | None = Field(default=None, gt=0, le=1)


NO_DEFAULTS = ModelDefaults()


def _model_entry(entry: str) -> tuple[str, str]:
    """`name=source` -> (name, source); a bare source is named after its last path part."""
    name, sep, source = entry.partition("=")
    if sep:
        return name.strip(), source.strip()
    return PurePosixPath(entry.strip().rstrip("/\\")).name or entry.strip(), entry.strip()


class Settings(BaseSettings):
    """Every field is documented, with its default, in `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", env_ignore_empty=True, extra="ignore")

    discord_token: SecretStr | None = None
    # Where slash commands are registered by `dreamgrid sync` when no guild is given there.
    discord_guild_id: int | None = None
    # Point discord.py at another Discord API (a proxy, or the tests' loopback fake).
    discord_api_base: str | None = None
    discord_gateway_url: str | None = None

    # The default model: a name from MODELS, or a source (the shipped model, a folder, a cached hub id).
    model: str = "dreamgrid-tiny"
    # Other models members may pick with `--model`: `name=source` entries, or bare sources, named
    # after their last path part (`/models/sdxl-turbo` is `sdxl-turbo`). MODEL is always included.
    models: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # LoRAs members may name in prompts (`--lora NAME`, `<lora:NAME:0.8>`): `name=/path/file.safetensors`
    # entries, comma-separated. Each server picks which it allows with /config loras.
    loras: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # A 9-channel inpainting model of MODEL's family whose UNet Zoom, Pan and Vary (Region) use.
    inpaint_model: str | None = None
    # Per-model defaults by name, e.g. {"sdxl-turbo": {"steps": 4, "guidance_scale": 0}}.
    model_defaults: dict[str, ModelDefaults] = Field(default_factory=dict)
    device: str = "auto"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    data_dir: Path = Path("data")
    # New jobs are refused while DATA_DIR's disk has less free space than this (MiB).
    min_free_disk_mb: int = Field(default=512, ge=0)
    # Images older than this many days are deleted; their jobs are drawn again when asked for. None: kept.
    image_retention_days: int | None = Field(default=None, ge=1)
    # The images folder is kept under this many GB (10^9 bytes), oldest images deleted first. None: no limit.
    image_store_max_gb: float | None = Field(default=None, gt=0)
    # Load the model's safety checker, so servers can turn on /config safety_checker.
    safety_checker: bool = False
    # The image-to-text model behind /describe: the shipped one, a local BLIP/GIT folder or a cached hub id.
    describer: str = "dreamgrid-describer"
    # Speed switches (engine/optimize.py); each can be turned off, none changes the pictures.
    sdpa: bool = True
    channels_last: bool = True
    fuse_qkv: bool = True
    compile: Literal["off", "regional", "full"] = "off"
    static_shapes: bool = True
    vae_tiling: bool = True
    # A local IP-Adapter folder (weights + image_encoder/) for MODEL: image prompts use it when set,
    # image-to-image otherwise. IP_ADAPTER_WEIGHT names the weights file when the folder has several.
    ip_adapter: Path | None = None
    ip_adapter_weight: str | None = None

    steps: int = Field(default=20, ge=1, le=150)
    max_steps: int = Field(default=50, ge=1, le=150)
    guidance_scale: float = Field(default=7.5, ge=0, le=30)
    progress_interval_s: float = Field(default=2.0, ge=0.5)
    batch_window_s: float = Field(default=0.05, ge=0, le=5)

    # Direct messages: off, or on with only the bot-wide rules below (a server's /config stays in that server).
    allow_dms: bool = False
    # Bot-wide rules, applied everywhere on top of each server's /config.
    banned_users: Annotated[list[int], NoDecode] = Field(default_factory=list)
    banned_words: Annotated[list[str], NoDecode] = Field(default_factory=list)
    daily_quota: int = Field(default=0, ge=0)  # jobs per member per UTC day, across every server and DMs; 0: none

    max_running_per_user: int = Field(default=3, ge=1)
    max_queued_per_user: int = Field(default=10, ge=0)
    max_queue: int = Field(default=200, ge=1)
    max_concurrent_jobs: int = Field(default=4, ge=1)
    job_timeout_s: float = Field(default=600, gt=0)
    # /tune: training steps per style (~2 minutes on the shipped model, one CPU thread), and how long one may take.
    tune_steps: int = Field(default=TUNE_STEPS, ge=10, le=10_000)
    tune_timeout_s: float = Field(default=3600, gt=0)
    # The room each member's /tune styles may take, in MB (10^6 bytes); 0 turns /tune off.
    lora_storage_mb: int = Field(default=50, ge=0)
    max_attempts: int = Field(default=3, ge=1)

    # Models kept loaded at once (least recently used goes first), and a cap on their memory in GB.
    max_loaded_models: int = Field(default=2, ge=1)
    model_memory_budget_gb: float | None = Field(default=None, gt=0)
    # How weights sit on a GPU: all resident, or offloaded to the CPU between uses (engine/loading.py).
    memory_mode: Literal["full", "model_offload", "sequential_offload", "group_offload"] = "full"
    # Weight-only quantisation of the denoiser (needs torchao); None: off.
    quantize: Literal["int8"] | None = None
    # Single .safetensors checkpoints load with their family's configs: family -> a diffusers folder
    # (configs and tokenizers only), e.g. {"sdxl": "/models/sdxl-base-config"}.
    single_file_configs: dict[str, str] = Field(default_factory=dict)

    # Animate: a diffusers image-to-video folder (Wan 2.2, LTX-Video, CogVideoX…); None: the shipped
    # motion model, on the shipped model. Its memory: VIDEO_MEMORY_MODE as MEMORY_MODE, the VAE decoding
    # clips in tiles and frame batches, and the clip length in frames (0: 5 s at the model's rate).
    video_model: str | None = None
    video_memory_mode: Literal["full", "model_offload", "sequential_offload", "group_offload"] = "model_offload"
    video_vae_tiling: bool = True
    video_vae_slicing: bool = True
    video_frames: int = Field(default=0, ge=0, le=257)

    # "fake" swaps the model for a stand-in that draws flat colours: for load tests and demos without torch.
    # "ray" renders on a Ray Serve deployment of the diffusers engine: one replica per GPU, on many hosts.
    engine: Literal["diffusers", "ray", "fake"] = "diffusers"
    fake_step_delay_s: float = Field(default=0.0, ge=0)
    # ENGINE=ray: a running cluster (None starts a local Ray on 127.0.0.1), and the replicas to run there.
    ray_address: str | None = None
    ray_min_replicas: int = Field(default=1, ge=1)
    ray_max_replicas: int = Field(default=1, ge=1)
    ray_gpus_per_replica: float = Field(default=1.0, ge=0)
    ray_cpus_per_replica: float = Field(default=1.0, gt=0)

    # Prometheus metrics and /healthz on this port (None: off), bound to METRICS_HOST.
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    metrics_host: str = "127.0.0.1"

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("loras", mode="before")
    @classmethod
    def _split_loras(cls, value: object) -> object:
        entries = [m.strip() for m in value.split(",") if m.strip()] if isinstance(value, str) else value
        if not isinstance(entries, list):
            return entries
        names: set[str] = set()
        for entry in entries:
            name, sep, path = str(entry).partition("=")
            name, path = name.strip(), path.strip()
            if not sep or not LORA_NAME.fullmatch(name):
                raise ValueError(f"{entry!r} is not name=/path/file.safetensors (a name of letters, digits, - _ .)")
            if not path.endswith(".safetensors"):
                raise ValueError(f"the LoRA {name!r} is not a .safetensors file (pickled files can run code)")
            if name.lower() in names:
                raise ValueError(f"two LoRAs are named {name!r}")
            names.add(name.lower())
        return entries

    @field_validator("banned_users", mode="before")
    @classmethod
    def _split_users(cls, value: object) -> object:
        if isinstance(value, str):
            return [item.strip().strip("<@!>") for item in value.split(",") if item.strip()]
        return value

    @field_validator("banned_words", mode="before")
    @classmethod
    def _check_words(cls, value: object) -> object:
        words = split_list(value) if isinstance(value, str) else value
        if not isinstance(words, list):
            return words
        checked = []
        for word in words:
            word = word if is_pattern(word) else " ".join(str(word).lower().split())
            try:
                compile_rule(word)
            except PatternRefused as exc:
                raise ValueError(f"{word} can't be used: {exc}") from None
            checked.append(word)
        return checked

    @model_validator(mode="after")
    def _check_models(self) -> Settings:
        sources: dict[str, str] = {}
        for entry in [*self.models, self.model]:
            name, source = _model_entry(entry)
            if name in sources and sources[name] != source and entry != self.model:
                raise ValueError(f"two models are named {name!r}: {sources[name]} and {source}")
            sources.setdefault(name, source)
        unknown = set(self.model_defaults) - set(sources) - {source for source in sources.values()}
        if unknown:
            raise ValueError(f"MODEL_DEFAULTS names models that are not installed: {', '.join(sorted(unknown))}")
        return self

    @model_validator(mode="after")
    def _check_replicas(self) -> Settings:
        if self.ray_max_replicas < self.ray_min_replicas:
            raise ValueError(
                f"RAY_MAX_REPLICAS ({self.ray_max_replicas}) is below RAY_MIN_REPLICAS ({self.ray_min_replicas})"
            )
        return self

    @property
    def model_sources(self) -> dict[str, str]:
        """Every installed model's short name (what members see) -> where it is loaded from."""
        sources = dict(_model_entry(entry) for entry in self.models)
        name, source = _model_entry(self.model)
        if self.model in sources:  # MODEL names one of MODELS
            name, source = self.model, sources[self.model]
        return {name: source, **{n: s for n, s in sources.items() if n != name}}

    @property
    def lora_sources(self) -> dict[str, str]:
        """The operator's LoRAs: name -> .safetensors file."""
        return {name.strip(): path.strip() for name, _, path in (entry.partition("=") for entry in self.loras)}

    @property
    def default_model(self) -> str:
        """The default model's short name."""
        return next(iter(self.model_sources))

    @property
    def installed_models(self) -> list[str]:
        """The installed models' short names, the default first."""
        return list(self.model_sources)

    def model_name(self, model: str) -> str:
        """The short name of `model`, given as a name or as a source (jobs recorded before names)."""
        sources = self.model_sources
        if model in sources:
            return model
        return next((name for name, source in sources.items() if source == model), model)

    def defaults_for(self, model: str) -> ModelDefaults:
        source = self.model_sources.get(model, "")
        return self.model_defaults.get(model) or self.model_defaults.get(source) or NO_DEFAULTS

    def base_steps(self, model: str, family: ModelHints | None = None) -> int:
        """Steps at `--quality 1` on `model`: its MODEL_DEFAULTS, else its family's (`Engine.defaults`:
        Flux.1 [schnell] runs 4), else STEPS."""
        return self.defaults_for(model).steps or (family.steps if family else None) or self.steps

    def new_area_strength(self, model: str, family: ModelHints | None = None) -> float | None:
        """Zoom Out's, Make Square's and Pan's strength on `model`: its MODEL_DEFAULTS, else its own
        (`Engine.defaults`), else None: the kinds' OUTPAINT_NEW_AREA."""
        for strength in (self.defaults_for(model).new_area_strength, family.new_area_strength if family else None):
            if strength is not None:
                return strength
        return None

    def base_guidance(self, model: str, family: ModelHints | None = None) -> float:
        """Guidance at `--stylize 100` on `model`: its MODEL_DEFAULTS, else its family's, else GUIDANCE_SCALE."""
        for guidance in (self.defaults_for(model).guidance_scale, family.guidance_scale if family else None):
            if guidance is not None:
                return guidance
        return self.guidance_scale

    @property
    def database_path(self) -> Path:
        return self.data_dir / "dreamgrid.sqlite3"


class SettingsError(Exception):
    """A setting is missing or invalid; the message is one line for the operator."""


# Any: pydantic validates (and coerces) each override at run time, as it does the environment's strings.
def load_settings(**overrides: Any) -> Settings:
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'_'.join(str(p) for p in err['loc']).upper() or 'settings'}: {err['msg']}" for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None
