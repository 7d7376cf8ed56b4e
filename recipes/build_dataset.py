# Copyright the rdmldg_hf authors. Apache-2.0.
"""Build DomainBed-Reasoning: `rdmldg build` with its options read from a YAML config.

    # the paper's set-up for OfficeHome (GPT-4o teacher, label-blind, rejection sampling)
    export OPENAI_API_KEY=...
    python recipes/build_dataset.py --config recipes/configs/build_officehome_gpt4o.yaml \
        --images /data/DomainBed/office_home

    # any OpenAI-compatible server instead of the OpenAI API
    python recipes/build_dataset.py --config ... --base-url http://127.0.0.1:8000/v1 --teacher my-model

The YAML keys are the option names of `rdmldg build` (``max_rounds`` for ``--max-rounds``);
options on the command line override them. Interrupted builds resume: run the same command again.
"""

from __future__ import annotations

import argparse
import logging
import sys

import yaml

from rdmldg_hf.data import build_command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """`rdmldg build`'s options, defaults taken from ``--config``."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--config")
    known, _ = pre.parse_known_args(argv)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", help="YAML file of `rdmldg build` options (keys with underscores).")
    build_command.add_arguments(parser)
    if known.config:
        with open(known.config, encoding="utf-8") as handle:
            values = yaml.safe_load(handle) or {}
        actions = {action.dest: action for action in parser._actions if action.dest not in ("help", "config")}
        unknown = sorted(set(values) - set(actions))
        if unknown:
            parser.error(f"{known.config}: unknown keys {', '.join(unknown)}. Valid keys: {', '.join(sorted(actions))}.")
        for key, value in values.items():
            actions[key].required = False  # given by the config; the command line may still override
            if actions[key].type is not None and isinstance(value, str):
                value = actions[key].type(value)
        parser.set_defaults(**values)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    try:
        return int(build_command.run(args) or 0)
    except (ValueError, FileNotFoundError) as error:  # errors a user can act on, as `rdmldg build` prints them
        print(f"build_dataset.py: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
