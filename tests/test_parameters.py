"""The one table of prompt parameters drives the parser, /help, the CLI, and docs/parameters.md agrees with it."""

from __future__ import annotations

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
    low, high = parameter.bounds
    for value in (low, high):
        parse_prompt(f"a fox --{parameter.name} {value}", max_jobs=high)
    with pytest.raises(PromptError, match=f"use {low}–{high}"):
        parse_prompt(f"a fox --{parameter.name} {high + 1}", max_jobs=high)


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
