"""``rdmldg train``: MTCT or the whole RD-MLDG method (SARR) from a YAML config, as the recipes run them.

    rdmldg train mtct --config recipes/configs/mtct_tiny.yaml
    accelerate launch -m rdmldg_hf.cli train sarr --config recipes/configs/sarr_internvl3_8b.yaml --test_domain art

After the method, ``--config FILE`` and any field of the method's arguments (its script arguments, its
training config, TRL's ModelConfig) as ``--field value``; ``rdmldg train sarr --help`` lists them.
"""

from __future__ import annotations

import argparse

__all__ = ["METHODS", "add_arguments", "run"]

# Kept here (not imported from rdmldg_hf.training) so that `rdmldg --help` imports no trainer.
METHODS: tuple[str, ...] = ("mtct", "sarr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("method", choices=METHODS, help="'mtct' (MTCT alone) or 'sarr' (MTCT stage + SARR rounds).")
    parser.add_argument(
        "arguments",
        nargs=argparse.REMAINDER,
        help="--config FILE (YAML) and --field value overrides, read by TRL's TrlParser.",
    )


def run(args: argparse.Namespace) -> int:
    from ..recipe_setup import parse_recipe_args, use_cpu_cores
    from ..training import TRAINING_METHODS

    method = TRAINING_METHODS[args.method]
    script_args, training_args, model_args = parse_recipe_args(
        method.argument_types, args.arguments, description=f"rdmldg train {args.method}"
    )
    use_cpu_cores(script_args.cpu_threads)
    method.run(script_args, training_args, model_args)
    return 0
