"""The ``rdmldg`` subcommands, one module each (build, batches, eval, push, analyze, train, sweep,
collect).

A subcommand module provides ``add_arguments(parser)`` and ``run(args) -> int`` and keeps heavy imports
inside ``run`` so that ``rdmldg --help`` stays fast; ``rdmldg_hf.cli`` only dispatches to them.
"""

from __future__ import annotations

import argparse
from typing import Any


class CommandError(Exception):
    """An error the user can act on: printed without a traceback, exit code 2."""


def hub_offline_error(action: str) -> CommandError:
    """The error of ``action`` (``--push-to-hub``, ``rdmldg push``) while huggingface_hub is in offline mode."""
    return CommandError(
        f"{action} needs the Hugging Face Hub, but offline mode is on (HF_HUB_OFFLINE is set); "
        "unset HF_HUB_OFFLINE (or set it to 0) and run again."
    )


def add_device_arguments(group: Any) -> None:
    """``--device``, ``--dtype`` and ``--use-kernels``: where a local model runs (``rdmldg eval`` and ``analyze``)."""
    from ..models import DEVICE_HELP, DTYPE_HELP

    group.add_argument("--device", default="auto", help=f"Where a local model runs: {DEVICE_HELP}.")
    group.add_argument("--dtype", default="auto", help=f"Weights' dtype: {DTYPE_HELP}.")
    group.add_argument(
        "--use-kernels",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="Hub kernels (transformers' use_kernels) for a local model on a GPU (default: off; they are code "
        "fetched from the Hub, and offline one not cached falls back to the PyTorch layer with a warning).",
    )


def device_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The loading keywords of :func:`add_device_arguments`' options, checked (a bad value stops here, before
    any loading, with a ValueError naming it)."""
    from ..models import resolve_placement

    placement = resolve_placement(args.device, args.dtype)
    return {"device": placement.device, "dtype": placement.dtype, "use_kernels": args.use_kernels}
