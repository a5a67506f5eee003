"""Range checks shared by every params dataclass: one wording for every field the user can get wrong."""

from __future__ import annotations

import math


def short(value, limit: int = 40) -> str:
    """A bad value as shown in an error message: its repr, cut to `limit` characters (a 200,000-character
    string is not echoed back whole)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def check_int(name: str, value, low: int, high: int) -> None:
    """`value` must be a whole number in [low, high] (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be a whole number from {low:,} to {high:,}, got {short(value)}")


def check_float(name: str, value, low: float, high: float, *, low_open: bool = False) -> None:
    """`value` must be a finite number in [low, high] (or (low, high] with `low_open`)."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (low < value if low_open else low <= value) and value <= high
    if not ok:
        span = f"in ({low}, {high}]" if low_open else f"from {low} to {high}"
        raise ValueError(f"{name} must be a number {span}, got {short(value)}")
