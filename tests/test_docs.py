"""The docs say what the code does: tables written from the code's own registries, links that resolve."""

from __future__ import annotations

import importlib
import inspect
import re
from pathlib import Path

import pytest
from discord.ext import commands

from bot import guild_config
from bot.cli import INVITE_PERMISSIONS
from bot.client import EXTENSIONS
from bot.settings import Settings

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
OPERATORS = ROOT / "docs" / "operators.md"
MEMBERS = ROOT / "docs" / "members.md"
ENV_EXAMPLE = ROOT / ".env.example"
LINKED_DOCS = sorted(
    {
        README,
        ROOT / "ARCHITECTURE.md",
        ROOT / "BENCHMARKS.md",
        ROOT / "RELIABILITY.md",
        ROOT / "engine" / "training" / "MODEL_CARD.md",
        ROOT / "tests" / "fakediscord" / "README.md",
        *(ROOT / "docs").glob("*.md"),
    }
)
README_LIMIT = 12 * 1024  # a landing page: the rest lives in docs/

FENCE = re.compile(r"^(```|~~~).*?^\1", re.MULTILINE | re.DOTALL)
CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^#{1,6}\s+(.*?)\s*#*\s*$", re.MULTILINE)


def clean_env() -> Settings:
    """The settings a fresh install runs with: no .env, and none of the process's own variables."""
    return Settings(_env_file=None)


@pytest.fixture
def no_settings_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
        monkeypatch.delenv(name, raising=False)


def table_at(text: str, header: str) -> str:
    """The markdown table that starts with the line `header`, up to the first line that is not a row."""
    start = text.index(header + "\n")
    lines = []
    for line in text[start:].splitlines():
        if not line.startswith("|"):
            break
        lines.append(line)
    return "\n".join(lines) + "\n"


# -- /config ------------------------------------------------------------------------------------


def test_the_config_table_is_written_from_the_keys(no_settings_in_env):
    expected = guild_config.markdown_table(clean_env())
    header = expected.splitlines()[0]
    text = OPERATORS.read_text(encoding="utf-8")
    assert text.count(header + "\n") == 1, "one /config table"
    assert table_at(text, header) == expected, "paste the output of guild_config.markdown_table(Settings())"


def test_the_config_table_lists_every_key_once():
    rows = table_at(OPERATORS.read_text(encoding="utf-8"), "| key | what it sets | default | allowed |")
    names = re.findall(r"^\| `([a-z_]+)` \|", rows, re.MULTILINE)
    assert names == list(guild_config.KEYS)


# -- settings -----------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """`NAME=value` lines of .env.example (comments and blank lines left out)."""
    entries: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            assert match[1] not in entries, f"{match[1]} is in .env.example twice"
            entries[match[1]] = match[2]
    return entries


def test_env_example_has_a_line_for_every_setting_and_no_other():
    assert set(env_example()) == {name.upper() for name in Settings.model_fields}


def test_env_example_shows_each_settings_default(no_settings_in_env):
    defaults = clean_env()
    from_example = Settings(_env_file=ENV_EXAMPLE)
    for name in Settings.model_fields:
        assert getattr(from_example, name) == getattr(defaults, name), f"{name.upper()} in .env.example"
    # An empty line reads as "unset", which would hide a missing default: only settings that have none
    # (None, or an empty list) may be left empty.
    for name, value in env_example().items():
        default = getattr(defaults, name.lower())
        if value == "":
            assert default is None or default == [], f"{name}= should show its default, {default!r}"


def test_the_operators_guide_documents_every_setting():
    table = table_at(OPERATORS.read_text(encoding="utf-8"), "| setting | default | meaning |")
    documented = set()
    for row in table.splitlines()[2:]:
        documented |= set(re.findall(r"`([A-Z][A-Z0-9_]*)`", row.split("|")[1]))
    assert documented == {name.upper() for name in Settings.model_fields}


# -- the front door -----------------------------------------------------------------------------


def test_the_readme_is_a_landing_page():
    size = README.stat().st_size
    assert size < README_LIMIT, f"README.md is {size:,} bytes: move detail into docs/"
    text = README.read_text(encoding="utf-8")
    assert "![" in text and "(engine/training/grids.png)" in text
    assert f"scope=bot+applications.commands&permissions={INVITE_PERMISSIONS}" in text


def slash_commands() -> dict[str, list[str]]:
    """Every top-level slash command the loaded cogs define, with its subcommands when it is a group cog."""
    found: dict[str, list[str]] = {}
    for extension in EXTENSIONS:
        module = importlib.import_module(extension)
        for cog in vars(module).values():
            if not (inspect.isclass(cog) and issubclass(cog, commands.Cog) and cog.__module__ == extension):
                continue
            names = [command.name for command in cog.__cog_app_commands__]
            if cog.__cog_is_app_commands_group__:
                found[cog.__cog_group_name__] = names
            else:
                found.update({name: [] for name in names})
    return found


def test_every_slash_command_is_in_the_readme_and_the_guides():
    found = slash_commands()
    assert {"imagine", "blend", "describe", "config"} <= set(found)
    readme, members = README.read_text(encoding="utf-8"), MEMBERS.read_text(encoding="utf-8")
    operators = OPERATORS.read_text(encoding="utf-8")
    for name, subcommands in found.items():
        assert f"`/{name}" in readme, f"/{name} is missing from the README's command table"
        if subcommands:  # /config: the server admins' commands
            for sub in subcommands:
                assert f"`/{name} {sub}" in operators, f"/{name} {sub} is missing from docs/operators.md"
        else:
            assert f"`/{name}" in members, f"/{name} is missing from docs/members.md"


def test_the_readme_shows_the_test_command_ci_runs():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").strip().splitlines()[-1]
    assert ci.startswith("python3 -m venv .venv") and "pytest" in ci
    assert f"\n{ci}\n" in README.read_text(encoding="utf-8")


# -- links --------------------------------------------------------------------------------------


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    seen: dict[str, int] = {}
    for heading in HEADING.findall(FENCE.sub("", path.read_text(encoding="utf-8"))):
        base = slug(heading)
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def relative_links(path: Path) -> list[str]:
    text = CODE.sub("", FENCE.sub("", path.read_text(encoding="utf-8")))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z][a-z0-9+.-]*:", target)]


@pytest.mark.parametrize("doc", LINKED_DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves_to_a_file_in_the_repository(doc: Path):
    broken = []
    for target in relative_links(doc):
        file_part, _, anchor = target.partition("#")
        linked = (doc.parent / file_part).resolve() if file_part else doc
        if not linked.is_relative_to(ROOT) or not linked.exists():
            broken.append(f"{target}: no such file")
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(f"{target}: no heading #{anchor} in {linked.relative_to(ROOT)}")
    assert not broken, "\n".join(broken)


def test_the_link_checker_sees_links_and_headings():
    assert relative_links(README)  # the README links to the docs
    assert "server-admins-config" in anchors(OPERATORS)
    assert slug("More GPUs, more hosts: `ENGINE=ray`") == "more-gpus-more-hosts-engineray"
