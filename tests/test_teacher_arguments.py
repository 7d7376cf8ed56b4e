"""The teacher's options: the same flags for users, read from the settings dataclasses.

``cli_option_surface.json`` holds every option of ``rdmldg build`` and ``rdmldg eval`` (spelling, dest,
default, type, choices, nargs, const, action, metavar, group, required) as the parsers gave them before the
teacher's options came from its dataclasses; each must still be there, unchanged.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from rdmldg_hf.cli import build_parser

SURFACE = Path(__file__).with_name("cli_option_surface.json")


def subcommand_parser(name: str) -> argparse.ArgumentParser:
    """The parser of ``rdmldg NAME``, as ``rdmldg`` builds it."""
    (subparsers,) = (action for action in build_parser([name])._actions if action.choices)
    return subparsers.choices[name]


def option_surface(parser: argparse.ArgumentParser) -> dict[str, dict[str, Any]]:
    """Option string -> what a user can observe of it (an untyped store option reads a ``str``)."""
    groups = {id(action): group.title for group in parser._action_groups for action in group._group_actions}
    surface = {}
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        kind = type(action).__name__
        value_type = action.type if action.type is not None or kind != "_StoreAction" else str
        record = {
            "dest": action.dest,
            "default": action.default,
            "type": getattr(value_type, "__name__", repr(value_type)) if value_type is not None else None,
            "choices": list(action.choices) if action.choices is not None else None,
            "nargs": action.nargs,
            "const": action.const,
            "action": kind,
            "metavar": action.metavar,
            "group": groups[id(action)],
            "required": action.required,
        }
        surface.update(dict.fromkeys(action.option_strings, record))
    return surface


def underscored(option: str) -> str:
    """``--max-rounds`` -> ``--max_rounds``: the spelling HfArgumentParser adds beside the dashed one."""
    return "--" + option[2:].replace("-", "_")


@pytest.mark.parametrize("command", ["build", "eval"])
def test_every_option_keeps_its_spelling_default_type_choices_and_meaning(command):
    before = json.loads(SURFACE.read_text())[command]
    now = option_surface(subcommand_parser(command))
    changed = {option: now.get(option) for option, record in before.items() if now.get(option) != record}
    assert changed == {}, f"options of rdmldg {command} that changed or disappeared (was: {before})"
    dests = {record["dest"] for record in before.values()}
    spellings = set(before) | {underscored(option) for option in before}
    added = {option for option, record in now.items() if record["dest"] in dests and option not in spellings}
    assert added == set()  # an option of today's gets no new spelling but the underscored one
