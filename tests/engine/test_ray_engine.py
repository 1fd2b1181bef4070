"""`ENGINE=ray` specifics that the shared engine contract does not cover."""

from __future__ import annotations

import pytest

from engine.requests import RenderError

pytest.importorskip("ray")


def test_asking_for_gpus_a_local_ray_does_not_have_is_one_clear_error(ray_engine):
    from engine.ray_engine import RayEngine, running_replicas

    before = running_replicas()
    with pytest.raises(RenderError, match="RAY_GPUS_PER_REPLICA=0 to render on CPUs"):
        RayEngine(min_replicas=2, max_replicas=2, gpus_per_replica=1).deploy()
    assert running_replicas() == before > 0  # the deployment already running is untouched


def test_replicas_are_checked_before_anything_starts():
    from engine.ray_engine import RayEngine

    with pytest.raises(ValueError, match="replicas"):
        RayEngine(min_replicas=3, max_replicas=2)
