"""Argument types shared by the commands: argparse turns their ArgumentTypeError into its one-line usage error
naming the option."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable


def whole_number(low: int, high: int) -> Callable[[str], int]:
    """A type for a whole number from `low` to `high`."""

    def parse(text: str) -> int:
        try:
            number = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if not low <= number <= high:
            raise argparse.ArgumentTypeError(f"{number} is out of range: use {low} to {high}")
        return number

    return parse


def finite_number(text: str) -> float:
    """A type for a float option: NaN and infinity (`nan`, `inf`, `1e400`) are refused here, where the error
    names the option, rather than deep in a check that names an API field."""
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text} is not a finite number")
    return number
