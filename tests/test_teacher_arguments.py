"""The teacher's options: the same flags for users, read from the settings dataclasses.

``cli_option_surface.json`` holds every option of ``rdmldg build`` and ``rdmldg eval`` (spelling, dest,
default, type, choices, nargs, const, action, metavar, group, required) as the parsers gave them before the
teacher's options came from its dataclasses; each must still be there, unchanged.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import runpy
from pathlib import Path
from typing import Any

import pytest
import yaml
from trl import TrlParser

from rdmldg_hf.cli import build_parser
from rdmldg_hf.commands import build as build_command
from rdmldg_hf.teacher.arguments import TeacherRunArguments, request_settings, settings_from_args
from rdmldg_hf.teacher.settings import BatchLimits, RetryPolicy, SamplingSettings, TeacherSettings

REPO = Path(__file__).resolve().parents[1]
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


def assert_unchanged(before: dict[str, dict[str, Any]], now: dict[str, dict[str, Any]]) -> None:
    changed = {option: now.get(option) for option, record in before.items() if now.get(option) != record}
    assert changed == {}, f"options that changed or disappeared (was: {before})"
    dests = {record["dest"] for record in before.values()}
    spellings = set(before) | {underscored(option) for option in before}
    added = {option for option, record in now.items() if record["dest"] in dests and option not in spellings}
    assert added == set()  # an option of today's gets no new spelling but the underscored one


@pytest.mark.parametrize("command", ["build", "eval"])
def test_every_option_keeps_its_spelling_default_type_choices_and_meaning(command):
    assert_unchanged(json.loads(SURFACE.read_text())[command], option_surface(subcommand_parser(command)))


def test_the_build_recipe_parser_has_the_same_options():
    """recipes/build_dataset.py adds `rdmldg build`'s options to TRL's TrlParser."""
    parser = TrlParser(())
    build_command.add_arguments(parser)
    assert_unchanged(json.loads(SURFACE.read_text())["build"], option_surface(parser))


def test_each_teacher_option_help_is_the_help_of_the_field_it_sets():
    owners = (SamplingSettings, RetryPolicy, TeacherSettings, TeacherRunArguments, BatchLimits)
    helps = [item.metadata["help"] for owner in owners for item in dataclasses.fields(owner) if item.metadata]
    for command, title in (("build", "teacher"), ("eval", "--api requests")):
        (group,) = (group for group in subcommand_parser(command)._action_groups if group.title == title)
        teacher = [action for action in group._group_actions if action.dest not in ("store", "help")]
        assert len(teacher) == {"build": 28, "eval": 9}[command]
        assert [action.dest for action in teacher if not any(action.help is text for text in helps)] == []


NON_DEFAULT = {
    "--teacher": "my-teacher",
    "--base-url": "http://127.0.0.1:9/v1",
    "--api-key-env": "MY_KEY",
    "--concurrency": "3",
    "--timeout": "7.5",
    "--max-retries": "2",
    "--backoff-base": "0.25",
    "--backoff-max": "4",
    "--stop-after-failures": "0",
    "--candidates": "5",
    "--max-rounds": "0",
    "--temperature": "1.5",
    "--top-p": "0.9",
    "--max-tokens": "64",
    "--reasoning-effort": "low",
    "--image-max-side": "96",
    "--image-format": "webp",
    "--image-quality": "70",
    "--image-detail": "low",
    "--teacher-price": "2.5,10",
    "--batch-price-factor": "0.25",
}
EXPECTED = TeacherSettings(
    sampling=SamplingSettings(
        model="my-teacher",
        candidates=5,
        temperature=1.5,
        top_p=0.9,
        max_tokens=64,
        image_max_side=96,
        image_format="webp",
        image_quality=70,
        image_detail="low",
        reasoning_effort="low",
    ),
    retry=RetryPolicy(max_retries=2, base_delay=0.25, max_delay=4.0),
    base_url="http://127.0.0.1:9/v1",
    api_key_env="MY_KEY",
    timeout=7.5,
    concurrency=3,
    max_rounds=0,
    price=(2.5, 10.0),
    batch_price_factor=0.25,
    progress=False,
    stop_after_failures=0,
)


REQUEST_FLAGS = (
    "--base-url",
    "--api-key-env",
    "--concurrency",
    "--timeout",
    "--max-retries",
    "--backoff-base",
    "--backoff-max",
    "--stop-after-failures",
)


def test_every_teacher_option_sets_its_settings_field():
    arguments = [item for pair in NON_DEFAULT.items() for item in pair] + ["--no-progress"]
    args = subcommand_parser("build").parse_args(["--benchmark", "pacs", "--out", "x", *arguments])
    assert settings_from_args(args) == EXPECTED

    request = [item for option in REQUEST_FLAGS for item in (option, NON_DEFAULT[option])]
    args = subcommand_parser("eval").parse_args(["--dataset", "d", "--config", "pacs", *request, "--no-progress"])
    fields = {name: getattr(EXPECTED, name) for name in request_settings(args)}
    assert request_settings(args) == fields


def test_defaults_are_the_settings_defaults_and_other_spellings_still_work():
    parser = subcommand_parser("build")
    args = parser.parse_args(["--benchmark", "pacs", "--out", "x", "--teacher", "gpt-4o"])
    assert settings_from_args(args) == TeacherSettings()
    assert (args.teacher_store, args.mode, args.wait, args.poll_interval) == (None, "sync", False, 30.0)
    assert (args.batch_max_requests, args.batch_max_bytes) == (BatchLimits().max_requests, BatchLimits().max_bytes)
    args = parser.parse_args(["--benchmark", "pacs", "--out", "x", "--no-teacher-progress", "--max_rounds", "5"])
    assert (args.teacher_progress, args.max_rounds) == (False, 5)
    args = parser.parse_args(["--benchmark", "pacs", "--out", "x", "--mode", "batch", "--wait"])
    assert (args.mode, args.wait) == ("batch", True)


def test_a_bad_teacher_price_names_the_option_and_the_form(capsys):
    with pytest.raises(SystemExit):
        subcommand_parser("build").parse_args(["--benchmark", "pacs", "--out", "x", "--teacher-price", "2.5"])
    assert "--teacher-price takes 'INPUT,OUTPUT' in USD per million tokens, e.g. 2.5,10; got '2.5'" in (
        capsys.readouterr().err
    )


def test_a_build_config_sets_every_teacher_option_by_its_yaml_key(tmp_path):
    """The YAML keys of recipes/build_dataset.py are the options' dests of before."""
    dests = json.loads(SURFACE.read_text())["build"]
    keys = {dests[option]["dest"]: value for option, value in NON_DEFAULT.items()}
    config = tmp_path / "build.yaml"
    config.write_text(yaml.safe_dump({"benchmark": "pacs", "out": "x", "teacher_progress": False, **keys}))
    parse_args = runpy.run_path(str(REPO / "recipes" / "build_dataset.py"))["parse_args"]
    assert settings_from_args(parse_args(["--config", str(config)])) == EXPECTED
