"""The ``rdmldg`` command: dispatches to one module per subcommand in :mod:`rdmldg_hf.commands`.

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` and keeps
heavy imports inside ``run``: only the requested subcommand's module is imported, so that
``rdmldg --help`` stays fast (tests/test_cli.py checks it).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from .commands import CommandError

# subcommand -> (module, one-line help)
SUBCOMMANDS: dict[str, tuple[str, str]] = {
    "build": (
        "rdmldg_hf.commands.build",
        "Build DomainBed-Reasoning from DomainBed image folders (or the embedded benchmark).",
    ),
    "batches": ("rdmldg_hf.commands.batches", "Status of the OpenAI Batch API jobs of a build."),
    "eval": ("rdmldg_hf.commands.eval", "Evaluate a model, adapter or API model on held-out domains."),
    "push": ("rdmldg_hf.commands.push", "Push a trained adapter with its model card to the Hub."),
    "demo": ("rdmldg_hf.commands.demo", "Serve a trained model as a Gradio app (or write its Hub Space)."),
    "train": ("rdmldg_hf.commands.train", "Train (MTCT, SARR or the LODO ablation) through accelerate launch."),
    "analyze": ("rdmldg_hf.commands.analyze", "Token-probability, entropy and loss-curve analyses and plots."),
    "sweep": ("rdmldg_hf.commands.sweep", "DomainBed-style sweeps: launch, status, delete_incomplete."),
    "collect": ("rdmldg_hf.commands.collect", "Results tables (three selection methods, mean +- error) from records."),
}


def _requested(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line (the first argument that is one), if any."""
    return next((arg for arg in argv if arg in SUBCOMMANDS), None)


def build_parser(argv: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser; only the requested subcommand's module is imported (help lines need none)."""
    parser = argparse.ArgumentParser(prog="rdmldg", description="RD-MLDG on the Hugging Face stack.")
    parser.add_argument("-v", "--verbose", action="store_true", help="Log debug messages.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    requested = _requested(argv)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        if requested == name:
            module = importlib.import_module(module_name)
            module.add_arguments(sub)
            sub.set_defaults(_run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return int(args._run(args) or 0)
    except (CommandError, ValueError, FileNotFoundError) as error:
        print(f"rdmldg {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
