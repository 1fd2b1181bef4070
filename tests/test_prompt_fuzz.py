"""Whatever a member types, the parser answers with jobs in range or a one-line PromptError, never a crash."""

from __future__ import annotations

import dataclasses
import math

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from bot.prompt import (
    CHAOS_RANGE,
    MAX_ASPECT,
    MAX_PROMPT_CHARS,
    QUALITIES,
    SEED_RANGE,
    STOP_RANGE,
    STYLIZE_RANGE,
    PromptError,
    parse_prompt,
)

NAMES = ["ar", "aspect", "seed", "no", "chaos", "c", "stylize", "s", "quality", "q", "stop", "tile", "repeat", "r"]
NAMES += ["model", "mine", "loop", "AR", "Seed", "TILE", "foo", "v", "s,"]
DASHES = ["--", "--", "—", "–", "—-", "-", "---", "", "\\--"]
MODELS = ("sd15", "SDXL")
OPTIONS = [{}, {"mine": "--ar 3:2 --chaos 20"}, {"loop": "--loop --mine"}, {"mine": "oils {a, b} --no \\{x --s 5"}]

values = st.one_of(
    st.integers(-10, 5_000_000_000).map(str),
    st.integers(-5, 1200).map(str),
    st.tuples(st.integers(0, 20), st.integers(0, 20)).map(lambda wh: f"{wh[0]}:{wh[1]}"),
    st.sampled_from([".25", ".5", "0.5", "1.0", "2", "3", "1.5:1", "2.35:1", "16:9", "1:4", "4:1", "sd15", "sdxl"]),
    st.sampled_from(["", "a, b", ",", "{1:1, 3:2}", "{2, 3}", "{10,20,30}", "\\,", "9" * 30]),
    st.text(max_size=8),
)
parameters = st.builds(
    lambda dash, name, value: f"{dash}{name} {value}", st.sampled_from(DASHES), st.sampled_from(NAMES), values
)
words = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        ["cat", "a red bird", ",", "\\,", "\\{", "\\", "::", "—", "–5", "hot dog::2", "\u00e9t\u00e9", "\U0001f431"]
    ),
    st.sampled_from(["cat", "{red, green}", "{a, {b, c}}", "{,}", "{x}", "{cat, --tile}", "{", "}"]),
)
separators = st.sampled_from([" ", "  ", "\n", "\t", "", "\u3000"])


def joined(pieces: list[tuple[str, str]]) -> str:
    return "".join(piece + sep for piece, sep in pieces)


# Mostly a description then parameters (as members write them), with stray words or parameters
# after them now and then, and sometimes a prompt near the length limit.
described = st.builds(
    lambda *parts: "".join(parts),
    st.lists(st.tuples(words, separators), max_size=4).map(joined),
    st.lists(st.tuples(parameters, separators), max_size=4).map(joined),
    st.lists(st.tuples(st.one_of(words, parameters), separators), max_size=2).map(joined),
)
# Well-formed prompts, so that many examples get through and their jobs are checked.
good_values = {
    "ar": st.integers(1, 30).flatmap(
        lambda h: st.integers(-(-h // MAX_ASPECT), MAX_ASPECT * h).map(lambda w: f"{w}:{h}")
    ),
    "seed": st.integers(*SEED_RANGE).map(str),
    "no": st.lists(st.text(st.characters(exclude_characters="{},\\"), min_size=1, max_size=6), min_size=1).map(
        ", ".join
    ),
    "c": st.integers(*CHAOS_RANGE).map(str),
    "s": st.integers(*STYLIZE_RANGE).map(str),
    "q": st.sampled_from([".25", "0.25", ".5", "0.5", "1", "1.0", "2"]),
    "stop": st.integers(*STOP_RANGE).map(str),
    "tile": st.just(""),
    "r": st.integers(1, 3).map(str),
    "model": st.sampled_from(["sd15", "SDXL", "sdxl"]),
}
good_parameters = st.sampled_from(sorted(good_values)).flatmap(
    lambda name: st.builds(
        lambda dash, value: f"{dash}{name} {value}", st.sampled_from(["--", "—", "–"]), good_values[name]
    )
)
good = st.builds(
    lambda text, params: f"{text} {' '.join(params)}",
    st.text(st.characters(exclude_characters="{}\\-—–"), min_size=1, max_size=30).filter(str.strip),
    st.lists(good_parameters, max_size=5, unique_by=lambda p: p.split()[0].lstrip("-—–")),
)
long = st.builds(
    lambda n, tail: "a" * n + " " + tail, st.integers(MAX_PROMPT_CHARS - 20, MAX_PROMPT_CHARS + 5), described
)
prompts = st.sampled_from([described] * 5 + [good] * 4 + [long]).flatmap(lambda strategy: strategy)
suffixes = st.sampled_from(
    [st.just("")] * 3
    + [st.lists(parameters, max_size=2).map(" ".join), st.lists(good_parameters, max_size=2).map(" ".join)]
    + [described, st.just("--seed " + "1" * 5000)]
).flatmap(lambda strategy: strategy)


def check_message(error: PromptError) -> None:
    message = str(error)
    assert message.strip() == message and message
    assert len(message) < 200
    assert len(message.splitlines()) == 1
    assert "Traceback" not in message and 'File "' not in message and "Error" not in message


def check_job(job, models) -> None:
    assert job.text and job.text == " ".join(job.text.split())
    assert job.negative == ", ".join(item.strip() for item in job.negative.split(","))
    if job.aspect is not None:
        width, height = job.aspect
        assert width > 0 and height > 0 and math.gcd(width, height) == 1
        assert width <= MAX_ASPECT * height and height <= MAX_ASPECT * width
    if job.seed is not None:
        assert SEED_RANGE[0] <= job.seed <= SEED_RANGE[1]
    if job.chaos is not None:
        assert CHAOS_RANGE[0] <= job.chaos <= CHAOS_RANGE[1]
    if job.stylize is not None:
        assert STYLIZE_RANGE[0] <= job.stylize <= STYLIZE_RANGE[1]
    if job.quality is not None:
        assert job.quality in QUALITIES
    if job.stop is not None:
        assert STOP_RANGE[0] <= job.stop <= STOP_RANGE[1]
    assert isinstance(job.tile, bool)
    if models and job.model is not None:
        assert job.model in models
    assert len(job.raw) <= MAX_PROMPT_CHARS


@settings(
    max_examples=2000,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    text=prompts,
    suffix=suffixes,
    options=st.sampled_from(OPTIONS),
    models=st.sampled_from([(), MODELS]),
    max_jobs=st.sampled_from([40, 40, 3, 1]),
)
def test_any_prompt_gives_jobs_in_range_or_a_short_message(text, suffix, options, models, max_jobs) -> None:
    try:
        jobs = parse_prompt(text, suffix=suffix, options=options, models=models, max_jobs=max_jobs)
    except PromptError as e:
        check_message(e)
        event("refused: " + " ".join(word for word in str(e).split() if not set("`0123456789") & set(word))[:40])
        return
    event(f"accepted ({'one job' if len(jobs) == 1 else 'several jobs'})")
    assert 1 <= len(jobs) <= max_jobs
    for job in jobs:
        check_job(job, models)
        # raw holds the suffix and the options: alone it gives the same job back (this is Remix)
        assert parse_prompt(job.raw, models=models) == [job]
        again = parse_prompt(job.to_text(), models=models)
        assert [dataclasses.replace(j, raw=job.raw) for j in again] == [job]
