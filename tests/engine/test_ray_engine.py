"""`ENGINE=ray` specifics that the shared engine contract does not cover."""

from __future__ import annotations

import time

import pytest

from engine.requests import RenderError
from tests.engine.conftest import request as render_request

pytest.importorskip("ray")


def test_asking_for_gpus_a_local_ray_does_not_have_is_one_clear_error(ray_engine):
    from engine.ray_engine import RayEngine, running_replicas

    before = running_replicas()
    with pytest.raises(RenderError, match="RAY_GPUS_PER_REPLICA=0 to render on CPUs"):
        RayEngine(min_replicas=2, max_replicas=2, gpus_per_replica=1).deploy()
    assert running_replicas() == before > 0  # the deployment already running is untouched


async def test_the_engine_is_alive_while_serve_runs_a_healthy_replica(ray_engine):
    assert await ray_engine.alive()  # for /healthz; asked of Serve, so it never waits behind renders


def test_replicas_are_checked_before_anything_starts():
    from engine.ray_engine import RayEngine

    with pytest.raises(ValueError, match="replicas"):
        RayEngine(min_replicas=3, max_replicas=2)


async def test_a_replica_sends_progress_only_as_often_as_the_bot_shows_it(ray_engine):
    # Every event is pickled and routed through Serve; one per denoising step costs the replicas CPU.
    every_s = ray_engine.progress_interval_s / 2  # what the replicas send at most, besides first and last
    events = []
    started = time.monotonic()
    await ray_engine.render(render_request(steps=60, seeds=(1,)), progress=events.append)
    elapsed = time.monotonic() - started
    steps = [e.step for e in events]
    assert steps[0] == 1 and steps[-1] == 60 and steps == sorted(set(steps))
    assert len(events) <= 2 + elapsed / every_s, (len(events), elapsed)
