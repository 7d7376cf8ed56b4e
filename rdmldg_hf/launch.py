"""``rdmldg train NAME``: recipe ``NAME`` launched through ``accelerate launch``, as ``trl sft`` launches its script.

    rdmldg train sarr                                              # the packaged embedded default
    rdmldg train sarr --config sarr_internvl3_8b.yaml --test_domain art --num_processes 8
    rdmldg train lodo --config my_lodo.yaml --config_file my_accelerate.yaml

The command line is split as TRL splits it: what the recipe reads (``--config`` and its dataclasses' fields) goes to
the recipe, the rest (``--num_processes``, ``--config_file``, ``--multi_gpu``, ... and TRL's ``--accelerate_config
NAME|FILE``) to ``accelerate launch``, so that your accelerate config decides the processes. Every process runs
``python -m rdmldg_hf.launch NAME ARGS``: :func:`rdmldg_hf.training.run_recipe`, what ``recipes/NAME.py`` runs.
"""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Sequence

__all__ = ["launch", "launch_argv"]


def _without(args: Sequence[str], subsequence: Sequence[str]) -> list[str]:
    """``args`` less ``subsequence`` (an ordered subsequence of it)."""
    rest, taken = [], iter(subsequence)
    wanted = next(taken, None)
    for arg in args:
        if wanted is not None and arg == wanted:
            wanted = next(taken, None)
        else:
            rest.append(arg)
    return rest


def launch_argv(name: str, argv: Sequence[str]) -> list[str]:
    """The arguments of ``accelerate launch`` that run recipe ``name`` on ``argv`` (recipe and accelerate options
    mixed; ``-h`` prints the recipe's help and exits).

    Raises:
        ValueError: an argument that neither the recipe nor ``accelerate launch`` reads, a YAML field the recipe
            does not read, or a value it refuses.
    """
    from accelerate.commands.launch import launch_command_parser
    from trl.cli.accelerate_config import resolve_accelerate_config_argument

    from .methods import get_recipe
    from .recipe_setup import split_recipe_args

    recipe = get_recipe(name)
    description = f"{recipe.help} Options of `accelerate launch` (--num_processes, --config_file, ...) go to it."
    _, unread = split_recipe_args(recipe.load().argument_types, argv, description, prog=f"rdmldg train {name}")
    script_args = _without(argv, unread)
    accelerate_args = resolve_accelerate_config_argument(unread)
    module = [*accelerate_args, "--module", __name__]
    parsed, unknown = launch_command_parser().parse_known_args([*module, name])
    if unknown or parsed.training_script != __name__:
        raise ValueError(
            f"Unknown command-line arguments {unread}: neither `rdmldg train {name} --help` nor "
            "`accelerate launch --help` lists them."
        )
    return [*module, name, *script_args]


def launch(name: str, argv: Sequence[str]) -> int:
    """Run recipe ``name`` on ``argv`` through ``accelerate launch`` (see :func:`launch_argv`); its exit status."""
    from accelerate.commands.launch import launch_command, launch_command_parser

    args = launch_argv(name, argv)
    print(f"accelerate launch {shlex.join(args)}", file=sys.stderr, flush=True)
    try:
        launch_command(launch_command_parser().parse_args(args))
    except subprocess.CalledProcessError as error:  # the process printed its own traceback
        return error.returncode
    return 0


if __name__ == "__main__":
    from rdmldg_hf.training import run_recipe

    run_recipe(sys.argv[1], sys.argv[2:])
