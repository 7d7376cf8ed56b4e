"""The leave-one-domain-out runner moved to :mod:`rdmldg_hf.experiments.lodo` (what trains and compares runs sits
above evaluation); ``rdmldg_hf.evaluation.lodo.LodoRunner`` keeps working with a warning."""

from __future__ import annotations

from typing import Any

from ..deprecation import moved


def __getattr__(name: str) -> Any:
    if name == "LodoRunner":
        from ..experiments.lodo import LodoRunner

        return moved(f"{__name__}.LodoRunner", "rdmldg_hf.experiments.lodo.LodoRunner", LodoRunner)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
