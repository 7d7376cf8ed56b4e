"""Former public names kept working: each answers with a warning that names its new spelling."""

from __future__ import annotations

import warnings
from typing import TypeVar

__all__ = ["moved"]

T = TypeVar("T")


def moved(old: str, new: str, value: T) -> T:
    """``value``, the former ``old`` (a module attribute read through its module's ``__getattr__``), with a
    FutureWarning naming ``new``, pointing at the caller's line."""
    warnings.warn(f"{old} is deprecated; use {new}.", FutureWarning, stacklevel=3)
    return value
