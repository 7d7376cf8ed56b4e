"""Checking a protocol setting against its valid values, with an error that names both."""

from __future__ import annotations

from typing import Iterable

__all__ = ["check_choice"]


def check_choice(value: str, valid: Iterable[str], setting: str, note: str = "") -> str:
    """``value`` if it is one of ``valid``.

    Raises:
        ValueError: ``Unknown <setting> <value>. Valid: <valid>.`` (+ ``note``).
    """
    valid = list(valid)
    if value not in valid:
        raise ValueError(f"Unknown {setting} {value!r}. Valid: {', '.join(valid)}.{' ' + note if note else ''}")
    return value
