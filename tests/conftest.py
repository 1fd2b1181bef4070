"""Fixtures shared by the engine and end-to-end tests."""

from __future__ import annotations

import concurrent.futures

import pytest

pytest_plugins = ["tests.fakediscord.fixtures"]

RAY_REPLICAS = 2


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under xdist (`-n`), every test that uses the local Ray instance runs on one worker, so the
    session starts it once, not once per worker (two clusters of two replicas would crowd 2 cores)."""
    for item in items:
        callspec = getattr(item, "callspec", None)
        on_ray = "ray_engine" in getattr(item, "fixturenames", ()) or (
            callspec is not None and callspec.params.get("engine") == "ray"
        )
        if on_ray:
            item.add_marker(pytest.mark.xdist_group("ray"))


@pytest.fixture(scope="session")
def ray_engine():
    """`ENGINE=ray` on a local Ray instance: two CPU replicas of the shipped model, one thread each.

    Started once per session (about half a minute on 2 busy cores) and shared: the engine is
    started and stopped without an event loop, so every test's own loop can use it.
    """
    pytest.importorskip("ray")
    from engine.ray_engine import RayEngine

    engine = RayEngine(
        min_replicas=RAY_REPLICAS,
        max_replicas=RAY_REPLICAS,
        gpus_per_replica=0,
        cpus_per_replica=1,
        local_cpus=RAY_REPLICAS,
        device="cpu",
        batch_window_s=0.2,
        progress_interval_s=0.5,  # as tests/e2e/test_ray.py's bot shows it
    )
    # Ray's local processes live as long as the thread that starts them: this one. Serve refuses
    # blocking calls on an event loop's thread, where an async fixture may ask for this one: deploy
    # from a helper thread.
    engine.connect()
    _in_thread(engine.deploy)
    yield engine
    engine.close()


def _in_thread(fn) -> None:
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(fn).result()
