"""The ``rdmldg`` subcommands, one module each (build, batches, eval, push, analyze, train, sweep,
collect).

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
inside ``run`` so that ``rdmldg --help`` stays fast; ``rdmldg_hf.cli`` only dispatches to them.
"""

from __future__ import annotations


class CommandError(Exception):
    """An error the user can act on: printed without a traceback, exit code 2."""
