"""The one table of prompt parameters drives the parser, /help, the CLI, and docs/parameters.md agrees with it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import bot.prompt
from bot.cogs.account import HELP_TEXT
from bot.prompt import PARAMETER_NAMES, PromptError, parse_prompt
from engine.cli import _parser
from engine.params import PARAMETERS

PARAMETERS_DOC = Path(__file__).resolve().parents[1] / "docs" / "parameters.md"


def markdown_table(*, engine: bool) -> str:
    """The parameter table as docs/parameters.md (with `engine`) and the parser's docstring show it."""
    lines = ["| Parameter | Alias | Values | Default |", "|-----------|-------|--------|---------|"]
    if engine:
        lines = [lines[0] + " In diffusers |", lines[1] + "--------------|"]
    for p in PARAMETERS:
        aliases = ", ".join(f"`--{alias}`" for alias in p.aliases)
        lines.append(f"| `{p.usage}` | {aliases} | {p.values} | {p.default} |" + (f" {p.engine} |" if engine else ""))
    return "\n".join(lines) + "\n"


def test_the_docs_and_the_parsers_docstring_show_the_parameter_table():
    expected = markdown_table(engine=True)
    text = PARAMETERS_DOC.read_text(encoding="utf-8")
    assert text.count(expected.splitlines()[0]) == 1, "one parameter table in docs/parameters.md"
    start = text.index(expected.splitlines()[0])
    rows = [line for line in text[start:].split("\n\n", 1)[0].splitlines() if line.startswith("|")]
    assert "\n".join(rows) + "\n" == expected  # the whole table: no row missing, none left over
    assert markdown_table(engine=False) in bot.prompt.__doc__
    assert markdown_table(engine=False) in bot.prompt.__doc__


def test_the_parser_knows_every_spelling_and_no_other():
    assert {s for p in PARAMETERS for s in (p.name, *p.aliases)} == PARAMETER_NAMES


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.bounds], ids=lambda p: p.name)
def test_the_parser_takes_each_range_from_the_table(parameter):
    low, high = (int(b) if float(b).is_integer() else b for b in parameter.bounds)
    for value in (low, high):
        parse_prompt(f"a fox --{parameter.name} {value}", max_jobs=int(high))
    with pytest.raises(PromptError, match=f"use {low}–{high}"):
        parse_prompt(f"a fox --{parameter.name} {high + 1}", max_jobs=int(high))


@pytest.mark.parametrize("parameter", [p for p in PARAMETERS if p.example], ids=lambda p: p.name)
def test_the_example_a_missing_value_suggests_is_accepted(parameter):
    with pytest.raises(PromptError, match=f"e.g. `--{parameter.name} {parameter.example}`"):
        parse_prompt(f"a fox --{parameter.name}")
    parse_prompt(f"a fox --{parameter.name} {parameter.example}")


def test_help_and_the_cli_are_written_from_the_table():
    cli_help = _parser().format_help()
    for parameter in PARAMETERS:
        assert f"`{parameter.usage}`" in HELP_TEXT
        for alias in parameter.aliases:
            assert f"`--{alias}`" in HELP_TEXT
    assert "0–1000 (default 100)" in " ".join(cli_help.split())


# Where each parameter must show: a RenderRequest field, or (for those that shape the job rather
# than the picture) "jobs" (how many), "mode". A parameter added to PARAMETERS without a leg fails here.
LEGS = {
    "ar": "width",
    "seed": "seeds",
    "no": "negative_prompt",
    "chaos": "chaos",
    "stylize": "guidance_scale",
    "quality": "steps",
    "stop": "stop",
    "tile": "tile",
    "draft": "steps",
    "repeat": "jobs",
    "fast": "mode",
    "relax": "mode",
    "model": "model",
    "iw": "image_weight",
    "sref": "style_codes",
    "sw": "style_weight",
    "p": "profile",  # its pictures are looked up in the store at /imagine (tests/e2e/test_style.py)
    "oref": "action",  # drawn with the subject as the family's reference (or as an IP-Adapter image prompt)
    "ow": "object_weight",  # the IP-Adapter's scale, on an image prompt only an --oref makes (tests/e2e)
    "lora": "loras",
    "motion": "strength",
    "loop": "loop",
}
MODELS = ("fake", "other")
NATIVE = 64


def _value(parameter) -> list[str]:
    if parameter.flag:
        return []
    return ["other"] if parameter.name == "model" else [parameter.example]


def _bot_leg(prompt: str) -> dict[str, object]:
    """What the bot makes of `prompt`: its jobs' requests and modes, as /imagine builds them."""
    from types import SimpleNamespace

    from bot import kinds, spec_builders, styles
    from bot.settings import Settings
    from bot.spec import InputImage
    from engine.fake import FakeEngine

    bot = SimpleNamespace(
        settings=Settings(_env_file=None, discord_token="x", model="fake", models=",".join(MODELS)),
        engine=FakeEngine(models=list(MODELS)),
    )
    parsed = parse_prompt(prompt, models=MODELS, max_jobs=40)
    job = styles.draw_codes(parsed[0])  # `--sref random` draws its code as /imagine does
    model = job.model or "fake"
    if job.object_ref is not None:  # --oref: the subject's picture as the model's reference
        picture = InputImage(path="p.png", name="p.png", width=NATIVE, height=NATIVE)
        spec, kind = (
            spec_builders.object_reference_spec(
                job, picture, settings=bot.settings, engine=bot.engine, model=model, defaults={}
            ),
            kinds.OBJECT_REFERENCE,
        )
    elif job.image_weight is not None:  # --iw steers a member's picture
        picture = InputImage(path="p.png", name="p.png", width=NATIVE, height=NATIVE)
        spec, kind = (
            spec_builders.image_prompt_spec(
                job, picture, settings=bot.settings, engine=bot.engine, model=model, defaults={}
            ),
            kinds.IMAGE_PROMPT,
        )
    else:
        spec, kind = (
            spec_builders.imagine_spec(job, settings=bot.settings, engine=bot.engine, model=model, defaults={}),
            kinds.IMAGINE,
        )
    request = spec.render.request(action=kind.action, seeds=kind.seeds(job.seed), model=model)
    return {
        "request": request,
        "jobs": len(parsed),
        "mode": job.mode,
        "profile": job.profile,
        "object_weight": job.object_weight,
    }


def _cli_leg(argv: list[str]):
    from engine.cli import _request

    return _request(_parser().parse_args(argv), native=NATIVE)


@pytest.mark.parametrize("parameter", PARAMETERS, ids=lambda p: p.name)
def test_every_parameter_reaches_the_render_request_from_the_bot_and_the_cli(parameter):
    assert parameter.name in LEGS, f"--{parameter.name} has no leg here: say where it must reach"
    leg = LEGS[parameter.name]
    typed = [f"--{parameter.name}", *_value(parameter)]

    # 1. the parser reads it
    parsed = parse_prompt(" ".join(["a fox", *typed]), models=MODELS, max_jobs=40)[0]
    assert parameter.name in parsed.parameter_values() or leg == "jobs"

    # 2. the bot's job carries it (a random seed aside, the rest is equal without it)
    # The same seed on both sides, so only the parameter differs (for --seed: random against 42).
    base = ["a fox"] if parameter.name == "seed" else ["a fox", "--seed", "1"]
    plain, given = _bot_leg(" ".join(base)), _bot_leg(" ".join([*base, *typed]))
    if leg in ("jobs", "mode", "profile", "object_weight"):
        assert given[leg] != plain[leg]
        return
    assert getattr(given["request"], leg) != getattr(plain["request"], leg)
    if not parameter.cli:
        return

    # 3. the CLI takes it as a flag, with the same meaning as in Discord
    cli_plain, cli_given = _cli_leg(base), _cli_leg([*base, *typed])
    assert getattr(cli_given, leg) != getattr(cli_plain, leg)
    assert getattr(cli_given, leg) == getattr(given["request"], leg)

    # 4. and `dreamgrid imagine "a fox --name value"` passes it on
    from bot.cli import _prompt_parameters_as_flags

    assert f"--{parameter.name}" in _prompt_parameters_as_flags([" ".join(["a fox", *typed])])


def test_the_cli_refuses_what_the_bot_refuses_in_the_same_words(capsys):
    from engine.cli import imagine_main

    for argv, expected in (
        (["a fox", "--ar", "100:1"], "`--ar 100:1` is out of range: use a ratio from 1:4 to 4:1."),
        (["a fox", "--chaos", "101"], "`--chaos 101` is out of range: use 0–100."),
        (["a fox", "--q", "3"], "`--quality 3` is not a quality: use .25, .5, 1 or 2."),
    ):
        assert imagine_main(argv) == 2
        assert capsys.readouterr().err.strip() == f"dreamgrid imagine: error: {expected}"
        with pytest.raises(PromptError, match=re.escape(expected.split(" is ")[1])):
            parse_prompt(" ".join(argv))
