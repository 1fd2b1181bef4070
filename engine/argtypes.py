"""argparse types for `dreamgrid`'s commands: a number out of range is refused in one line, before any work.

argparse turns the `ArgumentTypeError` into `dreamgrid eval: error: argument --seeds: '0' is not a
positive number` and exit status 2, the style of every other usage error, instead of a traceback
from deep inside a run (`--seeds 0` divided by zero) or a run that trains on NaN (`--lr -1`).
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

__all__ = ["fraction", "non_negative", "positive", "tile_size"]


def _number(kind: type[int] | type[float], text: str, wanted: str, ok: Callable[[float], bool]) -> int | float:
    """`text` read as `kind`, or ArgumentTypeError saying it is not `wanted` (NaN and infinity never are)."""
    try:
        value = kind(text)
    except ValueError:
        value = None
    if value is None or not math.isfinite(value) or not ok(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}")
    return value


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """More than 0: a count, a size, a learning rate."""
    return lambda text: _number(kind, text, "a positive number", lambda v: v > 0)


def non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """0 or more: a number of steps where 0 skips the stage, a guidance scale."""
    return lambda text: _number(kind, text, "a number, 0 or more", lambda v: v >= 0)


def fraction(text: str) -> float:
    """A share in [0, 1): a dropout rate (1 would drop every caption)."""
    return float(_number(float, text, "a number from 0 to under 1", lambda v: 0 <= v < 1))


def tile_size(text: str) -> int:
    """Pixels a side that the VAE can encode: a positive multiple of 8."""
    return int(_number(int, text, "a size in pixels that is a positive multiple of 8", lambda v: v > 0 and v % 8 == 0))
