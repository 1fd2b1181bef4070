"""The `dreamgrid` command's promises to an operator."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from bot.cli import _application_id_from_token, main

ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    return subprocess.run(
        [sys.executable, "-m", "bot.cli", *args],
        cwd=tmp_path,  # no .env there
        env={**clean, "PYTHONPATH": str(ROOT), **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_run_without_a_token_says_so_in_one_line(tmp_path: Path) -> None:
    done = run_cli("run", tmp_path=tmp_path)
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "DISCORD_TOKEN is not set" in done.stderr
    assert "Traceback" not in done.stderr


def test_python_dash_m_bot_is_dreamgrid_run(tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("DISCORD_")}
    done = subprocess.run(
        [sys.executable, "-m", "bot"],
        cwd=tmp_path,
        env={**clean, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0 and "DISCORD_TOKEN is not set" in done.stderr


def test_invalid_setting_is_one_clear_line(tmp_path: Path) -> None:
    done = run_cli("db", "upgrade", tmp_path=tmp_path, MAX_STEPS="lots")
    assert done.returncode != 0
    assert done.stderr.strip() == (
        "dreamgrid: invalid settings: MAX_STEPS: Input should be a valid integer, unable to parse string as an integer"
    )


def test_db_upgrade_creates_the_database(tmp_path: Path) -> None:
    done = run_cli("db", "upgrade", tmp_path=tmp_path, DATA_DIR=str(tmp_path / "d"))
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "d" / "dreamgrid.sqlite3").exists()
    assert "schema version" in done.stdout


def test_invite_url_asks_for_bot_and_commands_scopes_only(capsys) -> None:
    assert main(["invite", "--client-id", "1234"]) == 0
    url = capsys.readouterr().out.strip()
    assert url.startswith("https://discord.com/oauth2/authorize?client_id=1234&scope=bot+applications.commands")
    permissions = int(url.rsplit("permissions=", 1)[1])
    assert permissions & (1 << 3) == 0  # never Administrator


def test_application_id_is_read_from_a_bot_token() -> None:
    # A bot token's first segment is the base64 of the bot's (= application's) id.
    assert _application_id_from_token("MTIzNDU2Nzg5MDEyMzQ1Njc4.GaBcDe.xyz") == 123456789012345678


def test_imagine_takes_midjourney_parameters_inside_the_prompt() -> None:
    from bot.cli import _prompt_parameters_as_flags

    assert _prompt_parameters_as_flags(["a fox --ar 3:2 --seed 7 --no text, people --tile", "-o", "x.png"]) == [
        "a fox",
        "--ar",
        "3:2",
        "--seed",
        "7",
        "--no",
        "text, people",
        "--tile",
        "-o",
        "x.png",
    ]
    assert _prompt_parameters_as_flags(["--seed", "1", "plain"]) == ["--seed", "1", "plain"]


def test_imagine_with_a_bad_parameter_is_one_line(tmp_path: Path) -> None:
    done = run_cli("imagine", "a fox --chaos 300", tmp_path=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "dreamgrid: imagine: `--chaos 300` is out of range: use 0–100."


def test_run_with_a_model_that_is_not_here_is_one_line(tmp_path: Path) -> None:
    done = run_cli(
        "run", tmp_path=tmp_path, DISCORD_TOKEN="x.y.z", MODEL="someone/not-downloaded", DATA_DIR=str(tmp_path)
    )
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .startswith("dreamgrid: MODEL: could not load model 'someone/not-downloaded'")
    )
    assert "Traceback" not in done.stderr


def test_run_when_discord_cannot_be_reached_is_one_line(tmp_path: Path) -> None:
    done = run_cli(
        "run",
        tmp_path=tmp_path,
        DISCORD_TOKEN="x.y.z",
        ENGINE="fake",
        DATA_DIR=str(tmp_path),
        DISCORD_API_BASE="http://127.0.0.1:9/api/v10",
        LOG_LEVEL="ERROR",
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("dreamgrid: cannot reach Discord at http://127.0.0.1:9")
    assert "Traceback" not in done.stderr


def test_an_unknown_compile_mode_is_named_in_one_line(tmp_path: Path) -> None:
    done = run_cli("run", tmp_path=tmp_path, COMPILE="fast", DISCORD_TOKEN="x")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0, done.stderr
    assert "COMPILE" in done.stderr and "'regional'" in done.stderr
