"""The one registry of methods: what ``rdmldg train`` runs and the ablation rows of LODO runs and sweeps.

* :data:`RECIPES`: ``rdmldg train NAME``, ``recipes/NAME.py`` and the process that ``rdmldg train`` launches run
  recipe ``NAME``; each has a default config shipped in the package (what runs with no arguments).
* :data:`METHODS`: the ablation rows of the paper's table (``recipes/lodo.py``, ``rdmldg sweep``, ``rdmldg collect``),
  each trained by one of the recipes' trainers (``mtct`` or ``sarr``) in one MTCT mode.

Nothing here imports torch or a trainer, so that ``rdmldg --help`` and ``rdmldg train --help`` stay fast; a recipe's
code is imported when it is run (:meth:`Recipe.load`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

__all__ = [
    "CONFIGS_DIR",
    "METHODS",
    "MethodSpec",
    "RECIPES",
    "Recipe",
    "TrainingMethod",
    "check_methods",
    "get_recipe",
    "method_of",
    "packaged_config",
]

CONFIGS_DIR = Path(__file__).with_name("configs")
"""The configs shipped in the package (``recipes/configs/`` links to them)."""


@dataclass(frozen=True)
class TrainingMethod:
    """A recipe's argument dataclasses (what ``parse_recipe_args`` parses) and the function that runs it on them."""

    argument_types: tuple[type, ...]
    run: Callable[..., Any]


@dataclass(frozen=True)
class Recipe:
    """A way to train: its one-line help, its default config (a file of :data:`CONFIGS_DIR`) and where its
    :class:`TrainingMethod` is defined (``"module:attribute"``, imported on first use)."""

    help: str
    default_config: str
    entry: str

    @property
    def config_path(self) -> Path:
        """The default config: what ``rdmldg train NAME`` and ``recipes/NAME.py`` run with no arguments."""
        return packaged_config(self.default_config)

    def load(self) -> TrainingMethod:
        """The recipe's :class:`TrainingMethod` (imports its code: trainers, torch)."""
        module, attribute = self.entry.split(":")
        return getattr(importlib.import_module(module), attribute)


RECIPES: dict[str, Recipe] = {
    "mtct": Recipe(
        "MTCT alone: the paper's loss on classification and reasoning rows.",
        "mtct_tiny.yaml",
        "rdmldg_hf.training:MTCT",
    ),
    "sarr": Recipe(
        "The whole method (RD-MLDG): an MTCT stage, then SARR rounds of self-relabeling.",
        "sarr_tiny.yaml",
        "rdmldg_hf.training:SARR",
    ),
    "lodo": Recipe(
        "The leave-one-domain-out ablation: every ablation row trained once per held-out domain.",
        "lodo_tiny.yaml",
        "rdmldg_hf.training:LODO",
    ),
}


@dataclass(frozen=True)
class MethodSpec:
    """One ablation row: its trainer, MTCT mode, title, default evaluation modes and (SARR) the row it starts from."""

    title: str
    trainer: str  # the recipe whose trainer trains it: "mtct" or "sarr"
    mode: str
    eval_modes: tuple[str, ...]
    starts_from: str | None = None


METHODS: dict[str, MethodSpec] = {
    "labels_only": MethodSpec("Labels only", "mtct", "cls_only", ("direct",)),
    "reasoning_only": MethodSpec("Reasoning only", "mtct", "reasoning_only", ("reasoning",)),
    "mtct": MethodSpec("+MTCT", "mtct", "paired", ("direct", "reasoning")),
    "sarr": MethodSpec("+SARR", "sarr", "reasoning_only", ("reasoning",), starts_from="reasoning_only"),
    "full": MethodSpec("Full (MTCT + SARR)", "sarr", "paired", ("direct", "reasoning"), starts_from="mtct"),
}


def get_recipe(name: str) -> Recipe:
    """The recipe called ``name``.

    Raises:
        ValueError: naming it and the recipes there are.
    """
    if name not in RECIPES:
        raise ValueError(f"Unknown recipe {name!r}. Valid recipes: {', '.join(RECIPES)}.")
    return RECIPES[name]


def method_of(trainer: str, mode: str) -> str | None:
    """The ablation row that ``trainer`` (``mtct`` or ``sarr``) in MTCT ``mode`` trains, or None."""
    return next((name for name, spec in METHODS.items() if (spec.trainer, spec.mode) == (trainer, mode)), None)


def packaged_config(name: str) -> Path:
    """A config shipped in the package, by file name (``sarr_internvl3_8b.yaml``; ``.yaml`` may be left out).

    Raises:
        FileNotFoundError: naming it and the configs there are.
    """
    path = CONFIGS_DIR / (name if name.endswith((".yaml", ".yml")) else f"{name}.yaml")
    if path.parent != CONFIGS_DIR or not path.is_file():
        shipped = ", ".join(sorted(p.name for p in CONFIGS_DIR.glob("*.yaml")))
        raise FileNotFoundError(
            f"{name!r} is not a config shipped with rdmldg_hf; the packaged configs are: {shipped}."
        )
    return path


def check_methods(names: Iterable[str], what: str = "methods") -> None:
    """Check that every name is an ablation row of :data:`METHODS`.

    Raises:
        ValueError: naming the unknown ones (``what`` says where they come from) and the valid rows.
    """
    unknown = [name for name in names if name not in METHODS]
    if unknown:
        raise ValueError(f"Unknown {what} {unknown}. Valid methods: {', '.join(METHODS)}.")
