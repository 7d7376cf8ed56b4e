"""The ``rdmldg`` subcommands, one module each (build, batches, eval, push, analyze, train).

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
inside ``run`` so that ``rdmldg --help`` stays fast; ``rdmldg_hf.cli`` only dispatches to them.
"""

from __future__ import annotations


class CommandError(Exception):
    """An error the user can act on: printed without a traceback, exit code 2."""


def hub_offline_error(action: str) -> CommandError:
    """The error of ``action`` (``--push-to-hub``, ``rdmldg push``) while huggingface_hub is in offline mode."""
    return CommandError(
        f"{action} needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE is set); "
        "unset HF_HUB_OFFLINE (or set it to 0) and run again."
    )
