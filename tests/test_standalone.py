"""The repository stands alone: a clone anywhere, with no sibling folders, runs its own tests."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# What a path outside the clone looks like: an absolute path of some machine, or a step out of the repo.
OUTSIDE = re.compile(r"(?<![\w.])(/work/|/home/\w|/root/|/Users/\w|[A-Z]:\\\\Users|\.\./shared\b|\.\./\.library)")
# Briefings that live beside the repository on its first machine, never in it.
BRIEFINGS = re.compile(r"\b(DESIGN|STYLE)\.md\b")
TEXT_SUFFIXES = {".py", ".md", ".toml", ".txt", ".sql", ".cfg", ".ini", ".yaml", ".yml", ".sh", ".example", ""}


def tracked_files() -> list[Path]:
    """What a fresh clone holds: tracked files, and untracked ones git does not ignore (not yet committed)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    return [ROOT / name for name in out.decode().split("\0") if name and (ROOT / name).is_file()]


def test_no_file_names_a_path_outside_the_clone():
    offenders = []
    for path in tracked_files():
        if path.suffix not in TEXT_SUFFIXES or path.stat().st_size > 1_000_000 or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for number, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line) or BRIEFINGS.search(line):
                offenders.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:100]}")
    assert not offenders, "\n".join(offenders)


def test_the_discord_spec_is_vendored_with_its_licence():
    from tests.fakediscord import spec

    assert spec.SPEC_PATH.resolve().is_relative_to(ROOT)
    folder = spec.SPEC_PATH.parent
    assert "MIT License" in (folder / "LICENSE").read_text()
    assert re.search(r"\b[0-9a-f]{40}\b", (folder / "README.md").read_text()), "the spec's commit id"


def test_a_copy_with_no_siblings_runs_its_tests(tmp_path: Path):
    """Copy the clone alone into an empty folder and run a suite that reads the spec and starts the fake Discord."""
    clone = tmp_path / "lonely" / "dreamgrid"
    for path in tracked_files():
        target = clone / path.relative_to(ROOT)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = str(clone)  # the copy's code, not the checkout the venv was installed from
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-n",
            "0",
            "-p",
            "no:cacheprovider",
            "tests/test_fakediscord.py",
            "-k",
            "spec",
        ],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert " passed" in run.stdout
