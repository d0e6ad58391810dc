"""Values of JSON requests in checks and messages: a JSON integer may have thousands of digits, too many for
a float or a message; a message names a value's kind as JSON does."""

from __future__ import annotations

import math

#: An integer with more digits than this is shown by its length, not echoed in full.
SHOWN_DIGITS = 24


def is_finite(value: float) -> bool:
    """`math.isfinite`, which raises OverflowError on an int too large for a float; every int is finite."""
    return isinstance(value, int) or math.isfinite(value)


def shown_number(value: float) -> str:
    """`str(value)`, but an int of more than SHOWN_DIGITS digits by its number of digits."""
    if isinstance(value, int) and abs(value) >= 10**SHOWN_DIGITS:
        try:
            digits = len(str(abs(value)))
        except ValueError:  # over Python's limit on int-to-text conversion (4300 digits)
            return "a number of over 4,300 digits"
        return f"a number of {digits:,} digits"
    return str(value)


def json_kind(value: object) -> str:
    """How a message names a JSON value's kind: a text, a number, true or false, an array, an object, null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a text"
    return "an array" if isinstance(value, list) else "an object"
