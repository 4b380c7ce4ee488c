"""Numbers and short texts read from untrusted files, checked once, where they are read.

A model card, a config.json, a file header or a library export can hold any value its syntax can
spell: YAML builds integers of any size (``str()`` of one over 4,300 digits raises), JSON spells
``NaN``, ``Infinity`` and ``1e400`` (which Python reads as infinity), SQLite hands back whatever a
column was given, and a crafted file puts a string where a count belongs. Every reader passes such
values through these helpers, so a bad value fails where it is read, with a one-line error that
names the file and the key, instead of deep inside a computation (an OverflowError converting to
float, a NaN that poisons a sum, ``time.gmtime`` refusing 1e300).

Each helper takes the error class to raise, so a reader keeps its own exit code: a config or
header that states an impossible value is `InconsistentHeaderError` (15), a damaged library file
`CorruptCheckpointError` (14).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from .errors import InconsistentHeaderError, InputError
from .formats.base import sanitize

__all__ = [
    "INT64_MAX",
    "MAX_REAL",
    "MAX_WHOLE",
    "Bound",
    "check_numbers",
    "checked_float",
    "checked_int",
    "describe",
    "scalar_text",
]

INT64_MAX = (1 << 63) - 1
"""The largest count SQLite and numpy's int64 hold."""
MAX_WHOLE = 1 << 53
"""The largest whole number a float64 represents exactly: the bound for counts read from configs."""
MAX_REAL = 1e30
"""The largest real value (a rotary base, a scale) accepted from a config or header."""
MAX_TEXT_INT_BITS = 64
"""Integers wider than this are not turned into text (a 6,000-digit licence is not a licence)."""


def describe(value: object) -> str:
    """A short printable description of a rejected value; never ``str()`` of a huge integer."""
    if isinstance(value, bool) or value is None:
        return repr(value)
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else f"an integer of {value.bit_length()} bits"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(sanitize(value, 40))
    return f"a {type(value).__name__}"


def checked_int(
    value: object,
    *,
    where: str,
    minimum: int = 0,
    maximum: int = INT64_MAX,
    error: type[InputError] = InconsistentHeaderError,
) -> int:
    """``value`` if it is an int (not a bool) within ``minimum..maximum``; else ``error``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise error(f"{where} is {describe(value)}, not a whole number")
    if not minimum <= value <= maximum:
        raise error(f"{where} is {describe(value)}, not in [{minimum}, {maximum}]")
    return int(value)


def checked_float(
    value: object,
    *,
    where: str,
    minimum: float = -sys.float_info.max,
    maximum: float = sys.float_info.max,
    above: float | None = None,
    error: type[InputError] = InconsistentHeaderError,
) -> float:
    """``value`` as a finite float within ``minimum..maximum`` (and over ``above`` when given).

    Ints are accepted and compared exactly before conversion, so 10**4000 is refused, not an
    OverflowError.
    """
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise error(f"{where} is {describe(value)}, not a number")
    if isinstance(value, float) and not math.isfinite(value):
        raise error(f"{where} is {describe(value)}, not a finite number")
    if not minimum <= value <= maximum or (above is not None and not value > above):
        low = f"({_bound_text(above)}" if above is not None else f"[{_bound_text(minimum)}"
        raise error(f"{where} is {describe(value)}, not in {low}, {_bound_text(maximum)}]")
    return float(value)


def _bound_text(bound: float) -> str:
    return str(int(bound)) if float(bound).is_integer() and abs(bound) <= MAX_WHOLE else f"{bound:g}"


@dataclass(frozen=True)
class Bound:
    """The accepted values of one key: ``whole`` numbers (ints, or floats with no fraction, as some
    configs write them) or reals, within ``minimum..maximum``, strictly over ``above`` when set.
    JSON ``null`` always passes (the key is then absent)."""

    whole: bool
    minimum: float = 0.0
    maximum: float = MAX_REAL
    above: float | None = None


def check_numbers(
    mapping: Mapping[str, object],
    bounds: Mapping[str, Bound],
    *,
    where: str,
    error: type[InputError] = InconsistentHeaderError,
) -> None:
    """Check every key of ``bounds`` that ``mapping`` holds; raise ``error`` for the first bad one."""
    for key, bound in bounds.items():
        value = mapping.get(key)
        if value is None:
            continue
        label = f"{where}: {key}"
        number = checked_float(
            value, where=label, minimum=bound.minimum, maximum=bound.maximum, above=bound.above, error=error
        )
        if bound.whole and not number.is_integer():
            raise error(f"{label} is {describe(value)}, not a whole number")


def scalar_text(value: object, limit: int) -> str | None:
    """A declared scalar (a card's ``license``, a GGUF string) as stripped text of at most ``limit``
    characters; None for containers, booleans, empty strings and integers too wide to be a name."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return None
    if isinstance(value, int) and value.bit_length() > MAX_TEXT_INT_BITS:
        return None
    text = str(value).strip()
    return text[:limit] if text else None
