"""What "Waiting to start" and /queue say of the line: pure text from the jobs and the forecast."""

from __future__ import annotations

import dataclasses

from bot import kinds, messages
from bot.cogs.queue import queue_report
from tests.test_spec_builders import job_of, spec_of


def test_a_forecast_is_rounded_as_a_forecast_should_be():
    assert [messages.starts_in(s) for s in (0, 14, 30, 89, 150, 3599, 3600, 5400)] == [
        "starting any moment",
        "starting any moment",
        "starts in under a minute",
        "starts in about 1 min",
        "starts in about 2 min",
        "starts in about 60 min",
        "starts in about 1 h",
        "starts in about 1.5 h",
    ]


def test_waiting_shows_the_place_and_a_forecast_but_no_forecast_for_relax():
    job = job_of(kinds.IMAGINE, spec_of("a fox"))
    assert messages.waiting(job, 1).endswith("(Waiting to start, next in line)")
    assert messages.waiting(job, 3, 130).endswith("(Waiting to start, position 3, starts in about 2 min)")
    relaxed = dataclasses.replace(job, mode="relax")
    assert messages.waiting(relaxed, 3, 130).endswith(
        "(Waiting to start, position 3, Relax: starts when no Fast job waits)"
    )


def test_queue_lists_the_members_jobs_then_the_line():
    base = job_of(kinds.IMAGINE, spec_of("a fox"))
    running = dataclasses.replace(base, id=3, status="running", progress=0.4, prompt="a *bold* fox")
    waiting = dataclasses.replace(base, id=9, status="queued", prompt="x" * 80)
    text = queue_report([running, waiting], [5, 9], (4, 1, 7), lambda position: 45.0 * position)
    assert text.splitlines() == [
        "`3` running, 40%: a \\*bold\\* fox",
        f"`9` position 2, starts in about 2 min: {'x' * 60}…",
        "**The line:** 4 waiting and 1 running here; 7 waiting in all.",
    ]
    assert queue_report([], [], (0, 0, 0), lambda p: None).startswith("You have no jobs waiting or running.")
