"""argparse types for `dreamgrid`'s commands: a number out of range is refused in one line, before any work.

argparse turns the `ArgumentTypeError` into `dreamgrid eval: error: argument --seeds: '0' is not a
positive number` and exit status 2, the style of every other usage error, instead of a traceback
from deep inside a run (`--seeds 0` divided by zero) or a run that trains on NaN (`--lr -1`).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

__all__ = ["fraction", "non_negative", "positive", "tile_size"]


def _number(kind: type[int] | type[float], text: str, wanted: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {wanted}") from None


def positive(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """More than 0: a count, a size, a learning rate."""

    def parse(text: str) -> int | float:
        value = _number(kind, text, "a positive number")
        if not value > 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a positive number")
        return value

    return parse


def non_negative(kind: type[int] | type[float]) -> Callable[[str], int | float]:
    """0 or more: a number of steps where 0 skips the stage, a guidance scale."""

    def parse(text: str) -> int | float:
        value = _number(kind, text, "a number, 0 or more")
        if not value >= 0:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number, 0 or more")
        return value

    return parse


def fraction(text: str) -> float:
    """A share in [0, 1): a dropout rate (1 would drop every caption)."""
    value = _number(float, text, "a number from 0 to under 1")
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number from 0 to under 1")
    return float(value)


def tile_size(text: str) -> int:
    """Pixels a side that the VAE can encode: a positive multiple of 8."""
    value = int(_number(int, text, "a size in pixels"))
    if value <= 0 or value % 8:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size in pixels that is a positive multiple of 8")
    return value
