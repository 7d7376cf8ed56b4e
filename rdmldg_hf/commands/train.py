"""``rdmldg train``: a recipe (MTCT, the whole method SARR, or the LODO ablation) launched through accelerate.

    rdmldg train sarr                                    # no arguments: the packaged embedded default
    rdmldg train mtct --config recipes/configs/mtct_tiny.yaml
    rdmldg train sarr --config sarr_internvl3_8b.yaml --test_domain art --num_processes 8
    rdmldg train lodo --config recipes/configs/lodo_tiny.yaml

After the recipe, ``--config FILE`` (or the name of a config shipped in the package), any field of the recipe's
arguments as ``--field value`` (``rdmldg train sarr --help`` lists them) and any option of ``accelerate launch``
(``--num_processes``, ``--config_file``, TRL's ``--accelerate_config``), as ``trl sft`` takes them; see
:mod:`rdmldg_hf.launch`.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..deprecation import moved
from ..methods import RECIPES

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "recipes:\n" + "\n".join(f"  {name:<6} {recipe.help}" for name, recipe in RECIPES.items())
    parser.add_argument("method", choices=list(RECIPES), help="The recipe to run: " + ", ".join(RECIPES) + ".")
    parser.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="--config FILE (YAML) and --field value overrides, read by TRL's TrlParser; options of accelerate "
        "launch (--num_processes, --config_file, ...). None: the recipe's packaged default config.",
    )


def run(args: argparse.Namespace) -> int:
    from ..launch import launch

    return launch(args.method, args.arguments)


def __getattr__(name: str) -> Any:
    if name == "METHODS":  # the recipes' names, before rdmldg_hf.methods.RECIPES
        return moved(f"{__name__}.METHODS", "tuple(rdmldg_hf.methods.RECIPES)", tuple(RECIPES))
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
