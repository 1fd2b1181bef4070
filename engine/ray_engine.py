"""The engine across GPUs and hosts: a Ray Serve deployment of `DiffusersEngine`, one per replica.

    async with RayEngine(model="dreamgrid-tiny", min_replicas=2, max_replicas=2, gpus_per_replica=0) as engine:
        result = await engine.render(request, progress=print)

The bot keeps its SQLite queue, its fairness and its limits: the scheduler hands jobs to this engine
exactly as it does to `DiffusersEngine`, and Serve's own (in-memory) queue only spreads them over
the replicas. Each replica runs a whole `DiffusersEngine` (its batching, its least-recently-used
models) on one GPU, or on CPU threads. A render is a streaming call: the replica first says who it
is, then sends `RenderProgress` events (the first and last step, and between them only as often as
the bot shows progress) and finally the result or a `RenderError`. Cancelling the awaiting task
cancels the streaming call, and Serve cancels the replica's task, which stops the render at its next
step. A replica that dies mid-render fails that render with `RenderLost`, which the scheduler
retries; Serve starts a new replica.

Ray runs on `address` (an existing cluster, where dreamgrid must be installed on every node) or
on a local instance started here (node address 127.0.0.1), without its dashboard or usage
reporting and without Serve's HTTP proxy. Ray's own services (GCS, raylet, workers, agents) still
open ports on every interface, as Ray 2.60 does whatever the node address; they answer only
callers holding the cluster's token (Ray's token authentication, on by default).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Ray reports usage to its developers unless told not to; an operator who wants it can set it to 1.
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import ray  # noqa: E402
import ray.exceptions  # noqa: E402
from ray import serve  # noqa: E402
from ray.serve.exceptions import RayServeException  # noqa: E402

from engine import lora_files  # noqa: E402
from engine.describe import SHIPPED_DESCRIBER  # noqa: E402
from engine.requests import (  # noqa: E402
    Action,
    DescribeRequest,
    DescribeResult,
    Feature,
    ImagePromptMethod,
    ModelHints,
    ProgressCallback,
    RenderError,
    RenderLost,
    RenderProgress,
    RenderRequest,
    RenderResult,
    TuneRequest,
    TuneResult,
)

log = logging.getLogger(__name__)

TUNE_ON_RAY = "/tune trains on the bot's own engine only: it needs ENGINE=diffusers, not ray"

APP_NAME = "dreamgrid"
LOCAL_OBJECT_STORE_BYTES = 100 * 2**20  # results are a few images: Ray's default (30 % of RAM) is far too much
MODEL_FACTS_TIMEOUT_S = 120.0  # the first replica loads its model before it answers
ALIVE_TIMEOUT_S = 5.0


# -- what a replica streams back ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """Sent first by a replica for every render, and with its result: who is drawing it."""

    replica: str  # Serve's replica id
    pid: int  # the replica's worker process
    loaded_models: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Failed:
    message: str  # a RenderError's text, for the member


@dataclass(frozen=True, slots=True)
class _Finished:
    result: RenderResult
    replica: ReplicaInfo


@dataclass(frozen=True, slots=True)
class ModelFacts:
    """What the bot asks of a model before it queues a job, answered once by a replica."""

    native_size: int
    has_safety_checker: bool
    refusals: dict[str, str] = field(default_factory=dict)  # Action/Feature value -> the replica's sentence
    hints: ModelHints = field(default_factory=ModelHints)
    lora_refusal: str | None = None  # why the model's family takes no LoRA
    lora_denoiser: str = "unet"
    lora_context_dim: int | None = None  # its UNet's cross-attention width, for LoRA files' fit


# No access log: a line per render (and per progress stream) in every replica, forwarded to the
# bot's log, says nothing the bot's own job log does not.
@serve.deployment(name="RenderReplica", logging_config={"enable_access_log": False})
class RenderReplica:
    """One `DiffusersEngine` per replica; its worker thread batches what reaches this replica."""

    # Serve awaits an async __init__ (mypy's rule is for plain classes).
    async def __init__(  # type: ignore[misc]
        self, engine_options: dict[str, Any], threads: int | None, progress_every_s: float
    ) -> None:
        import torch

        from engine.core import DiffusersEngine

        if threads is not None:
            # Replicas sharing a host's CPUs must not fight over cores: one pool of `threads`, and
            # no second pool of inter-op threads beside it (torch starts one per core otherwise).
            torch.set_num_threads(threads)
            with contextlib.suppress(RuntimeError):  # only settable before torch's first parallel work
                torch.set_num_interop_threads(threads)
        self._progress_every_s = progress_every_s
        self._engine = DiffusersEngine(**engine_options)
        await self._engine.__aenter__()
        self._id = serve.get_replica_context().replica_id.unique_id

    def _info(self) -> ReplicaInfo:
        return ReplicaInfo(self._id, os.getpid(), tuple(self._engine.loaded_models))

    async def render(self, request: RenderRequest) -> AsyncIterator[ReplicaInfo | RenderProgress | _Failed | _Finished]:
        yield self._info()
        events: asyncio.Queue[RenderProgress] = asyncio.Queue()
        last_sent = -math.inf

        def send_when_due(event: RenderProgress) -> None:
            # Every event crosses Serve (pickled, routed): send the first, the last, and between
            # them no more than the bot can show, rather than one per denoising step.
            nonlocal last_sent
            now = time.monotonic()
            if event.step == 1 or event.step >= event.total or now - last_sent >= self._progress_every_s:
                last_sent = now
                events.put_nowait(event)

        task = asyncio.create_task(self._engine.render(request, progress=send_when_due))
        getter: asyncio.Future[RenderProgress] | None = None
        try:
            while not task.done():
                getter = asyncio.ensure_future(events.get())
                await asyncio.wait([task, getter], return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
            while not events.empty():
                yield events.get_nowait()
            try:
                result = task.result()
            except RenderError as exc:
                yield _Failed(str(exc))
                return
            yield _Finished(result, self._info())
        finally:
            # Serve cancels this generator's task when the caller cancels: stop the render with it.
            task.cancel()
            if getter is not None:
                getter.cancel()

    async def describe(self, request: DescribeRequest) -> DescribeResult | _Failed:
        try:
            return await self._engine.describe(request)
        except RenderError as exc:
            return _Failed(str(exc))

    async def model_facts(self, models: Sequence[str]) -> dict[str, ModelFacts]:
        facts = {}
        for name in models:
            refusals = {}
            for what in (*Action, *Feature):
                reason = self._engine.supports(name, what)
                if reason is not None:
                    refusals[what.value] = reason
            try:
                family = self._engine.family(name)
                no_lora, denoiser = self._engine.no_lora(family), family.denoiser_name
            except RenderError as exc:
                no_lora, denoiser = str(exc), "unet"
            facts[name] = ModelFacts(
                self._engine.native_size(name),
                self._engine.has_safety_checker(name),
                refusals,
                self._engine.defaults(name),
                no_lora,
                denoiser,
                self._engine.lora_context_dim(name),
            )
        return facts

    async def check_health(self) -> None:
        """Serve asks every few seconds; a replica whose render thread died is replaced."""
        if not await self._engine.alive():
            raise RuntimeError("the replica's render thread is not running")

    async def __del__(self) -> None:
        await self._engine.__aexit__(None, None, None)


def connect_ray(address: str | None = None, *, local_cpus: int | None = None) -> None:
    """Join the cluster at `address`, or start a local Ray that only this machine can reach."""
    if address is not None:
        ray.init(address=address, configure_logging=False)
        return
    ray.init(
        num_cpus=local_cpus,
        include_dashboard=False,
        object_store_memory=LOCAL_OBJECT_STORE_BYTES,
        _node_ip_address="127.0.0.1",
        configure_logging=False,
    )


def running_replicas() -> int:
    """How many replicas of the render deployment are up now (Serve replaces dead ones)."""
    try:
        deployment = serve.status().applications[APP_NAME].deployments["RenderReplica"]
    except KeyError:
        return 0
    states: dict[Any, int] = dict(deployment.replica_states)  # keyed by Serve's ReplicaState (a str enum)
    return int(states.get("RUNNING", 0))


class RayEngine:
    """The `engine.requests.Engine` protocol on a Ray Serve deployment of `DiffusersEngine`.

    model / models / sources / schedulers / device / dtype / batch_window_s / speedups /
        safety_checker / describer / ip_adapter / ip_adapter_weight / inpaint_unets /
        max_loaded_models / memory_budget_gb / memory / single_file_configs: as for `DiffusersEngine`,
        for the engine in each replica (paths must exist on every node that runs one).
    address: a running Ray cluster (`ray://host:10001` or `host:6379`); None starts a local one.
    min_replicas / max_replicas: equal for a fixed number of replicas; otherwise Serve scales
        between them by the renders in flight per replica.
    gpus_per_replica / cpus_per_replica: what Ray reserves for each replica (0 GPUs: CPU renders,
        with `cpus_per_replica` threads each).
    local_cpus: the CPUs a local Ray instance offers (default: this machine's).
    progress_interval_s: how often the bot shows a render's progress (PROGRESS_INTERVAL_S); a
        replica sends the first and last step and, between them, two events per interval.
    """

    def __init__(
        self,
        model: str = "dreamgrid-tiny",
        *,
        models: Sequence[str] | None = None,
        sources: Mapping[str, str] | None = None,
        schedulers: Mapping[str, str] | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_window_s: float = 0.05,
        speedups: Any = None,
        safety_checker: bool = False,
        describer: str = SHIPPED_DESCRIBER,
        ip_adapter: str | os.PathLike[str] | None = None,
        ip_adapter_weight: str | None = None,
        inpaint_unets: Mapping[str, str] | None = None,
        max_loaded_models: int = 2,
        memory_budget_gb: float | None = None,
        memory: Any = None,
        single_file_configs: Mapping[str, str] | None = None,
        address: str | None = None,
        min_replicas: int = 1,
        max_replicas: int = 1,
        gpus_per_replica: float = 1.0,
        cpus_per_replica: float = 1.0,
        target_renders_per_replica: int = 4,
        local_cpus: int | None = None,
        progress_interval_s: float = 2.0,
    ) -> None:
        if not 1 <= min_replicas <= max_replicas:
            raise ValueError(f"replicas: need 1 <= min ({min_replicas}) <= max ({max_replicas})")
        self._default = model
        names = list(models) if models is not None else [model]
        if model not in names:
            names.insert(0, model)
        self._models = tuple(names)
        self._by_source = {source: name for name, source in (sources or {}).items()}
        self._engine_options: dict[str, Any] = {
            "model": model,
            "models": list(self._models),
            "sources": dict(sources or {}),
            "schedulers": dict(schedulers or {}),
            "device": device,
            "dtype": dtype,
            "batch_window_s": batch_window_s,
            "speedups": speedups,
            "safety_checker": safety_checker,
            "describer": describer,
            "ip_adapter": ip_adapter,
            "ip_adapter_weight": ip_adapter_weight,
            "inpaint_unets": dict(inpaint_unets or {}),
            "max_loaded_models": max_loaded_models,
            "memory_budget_gb": memory_budget_gb,
            "memory": memory,
            "single_file_configs": dict(single_file_configs or {}),
        }
        self.address = address
        self.min_replicas = min_replicas
        self.max_replicas = max_replicas
        self.gpus_per_replica = gpus_per_replica
        self.cpus_per_replica = cpus_per_replica
        self.target_renders_per_replica = target_renders_per_replica
        self.local_cpus = local_cpus
        self.progress_interval_s = progress_interval_s
        self.replicas: dict[str, ReplicaInfo] = {}  # by replica id, as last heard from
        self.in_flight: dict[str, int] = {}  # renders streaming from each replica now
        self._handle: Any = None
        self._model_facts: dict[str, ModelFacts] = {}
        self._started_ray = False

    # -- lifecycle: blocking, so a test session can share one deployment across event loops ----

    async def __aenter__(self) -> RayEngine:
        # On this thread, not a worker thread: a local Ray's processes die with the thread that
        # started them (PR_SET_PDEATHSIG). The bot is not connected to Discord yet; blocking is fine.
        self.connect()
        await asyncio.to_thread(self.deploy)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)

    def start(self) -> None:
        """Connect to (or start) Ray, deploy the replicas and wait until they have loaded the model."""
        self.connect()
        self.deploy()

    def connect(self) -> None:
        """Join Ray, or start a local instance (call it on a thread that lives as long as Ray should)."""
        if not ray.is_initialized():
            connect_ray(self.address, local_cpus=self.local_cpus)
            self._started_ray = True

    def deploy(self) -> None:
        """Deploy the replicas and wait until they have loaded the model (blocking; no event loop here)."""
        started = time.perf_counter()
        gpus = ray.cluster_resources().get("GPU", 0)
        if self.gpus_per_replica * self.min_replicas > gpus:
            problem = (
                f"{self.min_replicas} replica(s) x RAY_GPUS_PER_REPLICA={self.gpus_per_replica:g} need more GPUs "
                f"than the Ray cluster has ({gpus:g}); set RAY_GPUS_PER_REPLICA=0 to render on CPUs"
            )
            if self.address is None:
                raise RenderError(problem)
            log.warning("%s (waiting for the cluster to add GPU nodes)", problem)
        serve.start(proxy_location="Disabled")  # renders come through handles; no HTTP ingress
        actor_options: dict[str, Any] = {"num_cpus": self.cpus_per_replica, "num_gpus": self.gpus_per_replica}
        # CPU renders: one torch thread per reserved CPU. On a GPU, torch's default is fine.
        threads = max(1, int(self.cpus_per_replica)) if self.gpus_per_replica == 0 else None
        # A replica holds two batches of grids (DiffusersEngine's max_batch: 16 images on a CPU, 32 on a
        # GPU): one drawing, the next gathering. More would wait there while another replica idles;
        # Serve keeps the rest and hands each to the first replica with room.
        grids_per_batch = (32 if self.gpus_per_replica else 16) // 4
        # @serve.deployment makes the class a Deployment; its stubs still say it is the class.
        replica: Any = RenderReplica
        deployment = replica.options(ray_actor_options=actor_options, max_ongoing_requests=2 * grids_per_batch)
        if self.min_replicas == self.max_replicas:
            deployment = deployment.options(num_replicas=self.min_replicas)
        else:
            deployment = deployment.options(
                autoscaling_config={
                    "min_replicas": self.min_replicas,
                    "max_replicas": self.max_replicas,
                    "target_ongoing_requests": self.target_renders_per_replica,
                }
            )
        try:
            # Progress twice per interval the bot shows it: a little jitter on the way never makes an edit late.
            replica = deployment.bind(self._engine_options, threads, self.progress_interval_s / 2)
            self._handle = serve.run(replica, name=APP_NAME, route_prefix=None)
            self._model_facts = self._handle.model_facts.remote(list(self._models)).result(
                timeout_s=MODEL_FACTS_TIMEOUT_S
            )
        except Exception as exc:  # a replica could not start: usually the model, as the log above says
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise RenderError(f"the Ray Serve replicas did not start: {reason}") from exc
        log.info(
            "Ray Serve: %s replica(s) of %s ready in %.1f s (%s)",
            self.min_replicas if self.min_replicas == self.max_replicas else f"{self.min_replicas}-{self.max_replicas}",
            self._default,
            time.perf_counter() - started,
            self.address or "local Ray on 127.0.0.1",
        )

    def close(self) -> None:
        """Remove the deployment; stop Ray too if this engine started it."""
        if self._handle is None:
            return
        self._handle = None
        try:
            serve.delete(APP_NAME)
        except Exception:
            log.warning("could not delete the Ray Serve application %s", APP_NAME, exc_info=True)
        if self._started_ray:
            serve.shutdown()
            ray.shutdown()

    # -- the protocol ------------------------------------------------------------------------

    @property
    def models(self) -> Sequence[str]:
        return self._models

    @property
    def default_model(self) -> str:
        return self._default

    @property
    def loaded_models(self) -> Sequence[str]:
        """Every model some replica had loaded when last heard from, least recently used first."""
        names: dict[str, None] = {}
        for info in self.replicas.values():
            names.update(dict.fromkeys(info.loaded_models))
        return tuple(names)

    def native_size(self, model: str | None = None) -> int:
        facts = self._model_facts.get(model or self._default)
        return facts.native_size if facts is not None else 512

    def has_safety_checker(self, model: str | None = None) -> bool:
        facts = self._model_facts.get(model or self._default)
        return facts is not None and facts.has_safety_checker

    def supports(self, model: str | None, what: Action | Feature) -> str | None:
        """As the replicas answered when the deployment started (from the models' configs)."""
        if what is Action.TUNE:
            return TUNE_ON_RAY
        facts = self._model_facts.get(model or self._default)
        return None if facts is None else facts.refusals.get(what.value)

    def lora_refusal(self, model: str | None, path: str) -> str | None:
        """From the replicas' facts and the file's header (the bot and the replicas share the LoRAs' disk)."""
        facts = self._model_facts.get(model or self._default)
        if facts is None:
            return None
        if facts.lora_refusal is not None:
            return facts.lora_refusal
        try:
            info = lora_files.inspect(path)
        except lora_files.LoraFileError as exc:
            return str(exc)
        return lora_files.fit_reason(
            info, family=facts.hints.family, denoiser=facts.lora_denoiser, context_dim=facts.lora_context_dim
        )

    def defaults(self, model: str | None = None) -> ModelHints:
        facts = self._model_facts.get(model or self._default)
        return ModelHints() if facts is None else facts.hints

    def image_prompt_method(self, model: str | None = None) -> ImagePromptMethod:
        # As each replica's DiffusersEngine decides: the IP-Adapter is loaded on the default model only.
        if self._engine_options["ip_adapter"] is not None and (model or self._default) == self._default:
            return ImagePromptMethod.IP_ADAPTER
        return ImagePromptMethod.IMAGE_TO_IMAGE

    async def alive(self) -> bool:
        """Whether Serve has a healthy replica running (asked of the controller: a request to a replica
        would queue behind renders)."""
        if self._handle is None:
            return False
        try:
            async with asyncio.timeout(ALIVE_TIMEOUT_S):
                return await asyncio.to_thread(running_replicas) > 0
        except (TimeoutError, ray.exceptions.RayError, RayServeException):
            return False

    async def render(self, request: RenderRequest, *, progress: ProgressCallback | None = None) -> RenderResult:
        model = request.model or self._default
        model = self._by_source.get(model, model)  # a job recorded before its model had a short name
        if model not in self._models:
            raise RenderError(f"model {model!r} is not installed (installed: {', '.join(self._models)})")
        if self._handle is None:
            raise RenderError("the engine is not running")
        stream = self._handle.options(stream=True).render.remote(request)
        replica: str | None = None
        try:
            async for item in stream:
                if isinstance(item, RenderProgress):
                    if progress is not None:
                        try:
                            progress(item)
                        except Exception:
                            log.exception("progress callback failed")
                elif isinstance(item, ReplicaInfo):
                    replica = item.replica
                    self.replicas[replica] = item
                    self.in_flight[replica] = self.in_flight.get(replica, 0) + 1
                elif isinstance(item, _Finished):
                    self.replicas[item.replica.replica] = item.replica
                    return item.result
                elif isinstance(item, _Failed):
                    raise RenderError(item.message)
        except asyncio.CancelledError:
            stream.cancel()  # Serve cancels the replica's task, which stops the render
            raise
        except ray.exceptions.RayTaskError as exc:  # a bug in the replica's code, not a lost replica
            log.error("render failed in replica %s: %s", replica, exc)
            raise RenderError(f"the render failed ({type(exc.cause).__name__}: {exc.cause})") from None
        except (ray.exceptions.RayError, RayServeException) as exc:  # the replica died, or none is up
            info = self.replicas.pop(replica, None) if replica else None
            where = f"replica {replica} (pid {info.pid})" if info else "Ray"
            log.warning("render lost with %s: %s", where, exc)
            raise RenderLost("the render was lost with the worker drawing it") from exc
        finally:
            if replica is not None and replica in self.in_flight:
                self.in_flight[replica] -= 1
                if not self.in_flight[replica]:
                    del self.in_flight[replica]
        raise RenderLost("the replica ended the render without a result")

    async def tune(self, request: TuneRequest, *, progress: ProgressCallback | None = None) -> TuneResult:
        raise RenderError(TUNE_ON_RAY)

    async def describe(self, request: DescribeRequest) -> DescribeResult:
        if self._handle is None:
            raise RenderError("the engine is not running")
        response = self._handle.describe.remote(request)
        try:
            answer = await response
        except asyncio.CancelledError:
            response.cancel()
            raise
        except ray.exceptions.RayTaskError as exc:
            log.error("describe failed in a replica: %s", exc)
            raise RenderError(f"the describe failed ({type(exc.cause).__name__}: {exc.cause})") from None
        except (ray.exceptions.RayError, RayServeException) as exc:
            log.warning("describe lost with its replica: %s", exc)
            raise RenderLost("the describe was lost with the worker running it") from exc
        if isinstance(answer, _Failed):
            raise RenderError(answer.message)
        return answer
