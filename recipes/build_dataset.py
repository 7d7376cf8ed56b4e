# Copyright the rdmldg_hf authors. Apache-2.0.
"""Build DomainBed-Reasoning: `rdmldg build` with its options read from a YAML config.

    # the paper's set-up for OfficeHome (GPT-4o teacher, label-blind, rejection sampling)
    export OPENAI_API_KEY=...
    python recipes/build_dataset.py --config recipes/configs/build_officehome_gpt4o.yaml \
        --images /data/DomainBed/office_home

    # any OpenAI-compatible server instead of the OpenAI API
    python recipes/build_dataset.py --config ... --base-url http://127.0.0.1:8000/v1 --teacher my-model

The YAML keys are the option names of `rdmldg build` (``max_rounds`` for ``--max-rounds``), read by
TRL's ``TrlParser``; options on the command line override them, and a key no option reads is an
error naming it and the file. Interrupted builds resume: run the same command again.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rdmldg_hf.commands import CommandError
from rdmldg_hf.commands import build as build_command
from rdmldg_hf.recipe_setup import parse_recipe_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`rdmldg build`'s options from ``argv`` (default: the command line), defaults taken from ``--config``."""
    (args,) = parse_recipe_args((), argv, build_command.add_arguments, description=__doc__.split("\n\n")[0])
    return args


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(build_command.run(parse_args(argv)) or 0)
    except (CommandError, ValueError, FileNotFoundError) as error:  # errors a user can act on, as `rdmldg build`
        print(f"build_dataset.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
