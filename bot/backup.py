"""Copies of the database taken while the bot runs, and checks that a database file is sound.

The database is the record (jobs, their requests and seeds, settings); images can be drawn
again from it, so backing up dreamgrid means backing up this one file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from datetime import UTC, datetime
from pathlib import Path

MAX_PROBLEMS = 20  # integrity_check's report is cut off after this many lines


def backup_path(destination: Path) -> Path:
    """A folder gets a dated file inside it; a file name is used as it is."""
    if destination.is_dir():
        return destination / f"dreamgrid-{datetime.now(UTC):%Y%m%d-%H%M%S}.sqlite3"
    return destination


def backup_database(source: Path, destination: Path) -> None:
    """Copy `source` to `destination` with SQLite's online backup API, then check the copy.

    The copy is taken in one step, inside one read transaction: a snapshot of a single moment,
    however busy the bot is (in WAL mode its writes carry on meanwhile). It is written next to
    `destination` under a name this call created itself (exclusively: never a file that was
    already there) and linked into place only once it passes the integrity check, so a failed or
    interrupted backup never leaves a half-written file under the name asked for, never replaces a
    file that appeared meanwhile, and removes nothing but its own temporary file.
    """
    fd, name = tempfile.mkstemp(prefix=f".{destination.name}.", suffix=".partial", dir=destination.parent)
    os.close(fd)
    partial = Path(name)
    try:
        with contextlib.closing(sqlite3.connect(source)) as src, contextlib.closing(sqlite3.connect(partial)) as dst:
            src.backup(dst)
            # One self-contained file: the copy leaves WAL mode (the bot turns it back on when it opens it).
            dst.execute("PRAGMA journal_mode=DELETE")
        problems = integrity_problems(partial)
        if problems:
            raise sqlite3.DatabaseError(f"the copy failed its integrity check: {problems[0]}")
        os.link(partial, destination)  # unlike a rename, refuses to replace a file of that name
    finally:
        partial.unlink(missing_ok=True)


def integrity_problems(path: Path) -> list[str]:
    """What SQLite's integrity and foreign-key checks find wrong; empty when the file is sound."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        found = [row[0] for row in db.execute(f"PRAGMA integrity_check({MAX_PROBLEMS})") if row[0] != "ok"]
        for table, rowid, parent, _ in db.execute("PRAGMA foreign_key_check"):
            found.append(f"{table} row {rowid} points at a missing row of {parent}")
    return found[:MAX_PROBLEMS]


def describe(path: Path) -> str:
    """The schema version and job count, to tell one copy from another."""
    uri = f"{path.resolve().as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        try:
            jobs = db.execute("SELECT COUNT(*) FROM jobs").fetchone()[0]
        except sqlite3.OperationalError:  # not a dreamgrid database, or an empty one
            return f"schema version {version}, no jobs table"
    return f"schema version {version}, {jobs} jobs"
