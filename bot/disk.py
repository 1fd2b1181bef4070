"""The data folder (DATA_DIR): can the bot write there, and is there room for more jobs?

A full or read-only disk must never leave a job "running" forever: the bot refuses new jobs
before space runs out, and a job whose images or row can't be written ends failed and told.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import uuid
from pathlib import Path

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}
_SQLITE_STORAGE = ("disk is full", "readonly", "read-only", "disk i/o error", "unable to open")


class StorageError(Exception):
    """The data folder can't be used; the message is one line for the operator."""


def check_writable(data_dir: Path) -> None:
    """Create DATA_DIR if needed and prove a file can be written there; StorageError if not."""
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        probe = data_dir / f".write-test-{uuid.uuid4().hex}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise StorageError(f"DATA_DIR {data_dir} can't be written to: {exc.strerror or exc}") from None


def free_bytes(data_dir: Path) -> int:
    """Bytes free on the disk that holds DATA_DIR (a statvfs call: cheap enough per command)."""
    return shutil.disk_usage(data_dir if data_dir.exists() else data_dir.parent).free


def is_storage_error(exc: BaseException) -> bool:
    """Whether `exc` means the disk is full or can't be written (so retrying later can succeed)."""
    if isinstance(exc, OSError):
        return exc.errno in _FULL_ERRNOS
    if isinstance(exc, sqlite3.OperationalError | sqlite3.DatabaseError):
        return any(text in str(exc).lower() for text in _SQLITE_STORAGE)
    return False
