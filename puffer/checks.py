"""The one integer check every settings owner uses (``vector``, ``ppo``, ``dist``, the front end)."""

from __future__ import annotations

from typing import Any

__all__ = ["positive_int"]


def positive_int(name: str, value: Any, *, optional: bool = False) -> int | None:
    """``value`` as an int; ``ValueError`` ``"<name>=<value>: must be a positive integer"`` unless
    it is a whole number >= 1 (an int, a numpy int, or a float such as ``1e6``; not a bool or a
    string), or None when ``optional``."""
    if optional and value is None:
        return None
    try:
        ok = not isinstance(value, (bool, str)) and int(value) == value and value >= 1
    except (TypeError, ValueError, OverflowError):  # None, NaN, inf
        ok = False
    if not ok:
        null = " (or null)" if optional else ""
        raise ValueError(f"{name}={value!r}: must be a positive integer{null}")
    return int(value)
