"""The teacher's options of ``rdmldg build`` and ``rdmldg eval --api``, read from its settings dataclasses.

Each option sets a field of :class:`~rdmldg_hf.teacher.settings.SamplingSettings`,
:class:`~rdmldg_hf.teacher.settings.RetryPolicy`, :class:`~rdmldg_hf.teacher.settings.TeacherSettings`,
:class:`TeacherRunArguments` or :class:`~rdmldg_hf.teacher.settings.BatchLimits`: its help, type, default and
choices are the field's (``metadata={"help": ...}`` as in TRL's configs), turned into an option by
``transformers.HfArgumentParser``, the parser of the recipes. The tables below only name each option (its dest,
which is also its YAML key in ``recipes/build_dataset.py``) and the field it sets.

:mod:`rdmldg_hf.commands.build` calls :func:`add_teacher_arguments` in its ``add_arguments`` and, when
``args.teacher`` is set, :func:`teacher_chains` in its ``run``; the mapping it returns fills the dataset's chain
columns, and its ``.summary`` belongs in the build summary and the card's creation section. How requests reach
the server (server, key, concurrency, time limits, retries, progress) is :func:`add_request_arguments`, which
``rdmldg eval --api`` shares.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, NamedTuple, Sequence

from ..benchmarks import Benchmark, get_benchmark
from ..data.schema import ChainRecord, SourceImage
from .settings import BatchLimits, RetryPolicy, SamplingSettings, TeacherSettings

__all__ = [
    "add_teacher_arguments",
    "add_request_arguments",
    "request_settings",
    "teacher_chains",
    "settings_from_args",
    "default_store_root",
    "TeacherRunArguments",
]

STORE_SUFFIX = ".teacher-store"


def default_store_root(out_dir: str | os.PathLike) -> Path:
    """``<out>.teacher-store``: beside the dataset folder, so that pushing the folder never uploads it."""
    out = Path(out_dir).absolute()
    return out.parent / f"{out.name}{STORE_SUFFIX}"


def _price(value: str) -> tuple[float, float]:
    try:
        prompt, completion = (float(part) for part in value.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--teacher-price takes 'INPUT,OUTPUT' in USD per million tokens, e.g. 2.5,10; got {value!r}."
        ) from None
    return prompt, completion


@dataclass
class TeacherRunArguments:
    """Where ``rdmldg build --teacher`` keeps the replies, and whether it asks now or through the Batch API."""

    teacher_store: str | None = field(
        default=None,
        metadata={
            "help": f"Folder of the resumable reply stores (default: <out>{STORE_SUFFIX}, beside the dataset folder).",
            "metavar": "DIR",
        },
    )
    mode: str = field(
        default="sync",
        metadata={
            "help": "sync: chat requests now; batch: OpenAI Batch API files (about half the price; run the same "
            "command again to collect). Both share the store (default %(default)s).",
            "choices": ("sync", "batch"),
        },
    )
    wait: bool = field(default=False, metadata={"help": "Batch mode: poll until every batch is collected."})
    poll_interval: float = field(
        default=30.0, metadata={"help": "Batch mode: seconds between polls (default %(default)s)."}
    )


class Option(NamedTuple):
    """A command-line option that sets the field ``name`` of the dataclass ``owner`` (default: the field ``dest``).

    ``dest`` is also the option's YAML key in ``recipes/build_dataset.py``. ``default`` and ``value_type`` replace the
    field's own where the option differs; ``flags`` spell a switch (default ``--dest``).
    """

    dest: str
    owner: type
    name: str = ""
    default: Any = dataclasses.MISSING
    value_type: Any = None
    flags: tuple[str, ...] = ()

    @property
    def field_name(self) -> str:
        return self.name or self.dest


REQUEST_OPTIONS = (
    Option("base_url", TeacherSettings),
    Option("api_key_env", TeacherSettings),
    Option("concurrency", TeacherSettings),
    Option("timeout", TeacherSettings),
    Option("max_retries", RetryPolicy),
    Option("backoff_base", RetryPolicy, "base_delay"),
    Option("backoff_max", RetryPolicy, "max_delay"),
    Option("stop_after_failures", TeacherSettings),
    Option("teacher_progress", TeacherSettings, "progress", flags=("--no-progress", "--no-teacher-progress")),
)
TEACHER_OPTIONS = (
    Option("teacher", SamplingSettings, "model", default=None),
    *REQUEST_OPTIONS,
    Option("candidates", SamplingSettings),
    Option("max_rounds", TeacherSettings),
    Option("temperature", SamplingSettings),
    Option("top_p", SamplingSettings),
    Option("max_tokens", SamplingSettings),
    Option("reasoning_effort", SamplingSettings),
    Option("image_max_side", SamplingSettings),
    Option("image_format", SamplingSettings),
    Option("image_quality", SamplingSettings),
    Option("image_detail", SamplingSettings),
    Option("teacher_price", TeacherSettings, "price", value_type=_price),
    Option("batch_price_factor", TeacherSettings),
)


RUN_OPTIONS = (
    *(Option(item.name, TeacherRunArguments) for item in dataclasses.fields(TeacherRunArguments)),
    Option("batch_max_requests", BatchLimits, "max_requests"),
    Option("batch_max_bytes", BatchLimits, "max_bytes"),
)


@functools.cache
def _field_types(owner: type) -> dict[str, Any]:
    return typing.get_type_hints(owner)


def _add_options(group: argparse._ActionsContainer, options: Sequence[Option]) -> None:
    """Add one option per entry, made from its field by ``HfArgumentParser`` (switches stay value-less flags)."""
    from transformers import HfArgumentParser

    for option in options:
        source = next(item for item in dataclasses.fields(option.owner) if item.name == option.field_name)
        value_type = option.value_type or _field_types(option.owner)[source.name]
        default = source.default if option.default is dataclasses.MISSING else option.default
        if value_type is bool:  # `--wait`, `--no-progress` (HfArgumentParser would make `--wait [BOOL]`)
            action = "store_false" if default else "store_true"
            flags = option.flags or ("--" + option.dest.replace("_", "-"),)
            group.add_argument(*flags, dest=option.dest, action=action, **source.metadata)
            continue
        spec = field(default=default, metadata=source.metadata)
        spec.name, spec.type = option.dest, value_type
        # the step HfArgumentParser's constructor runs for each field of its dataclasses: type, default, help, ...
        HfArgumentParser._parse_dataclass_field(group, spec)


def _field_values(args: argparse.Namespace, options: Sequence[Option], owner: type) -> dict[str, Any]:
    """The fields of ``owner`` that ``options`` set, from parsed ``args``."""
    return {option.field_name: getattr(args, option.dest) for option in options if option.owner is owner}


def _teacher_fields(args: argparse.Namespace, options: Sequence[Option]) -> dict[str, Any]:
    """:class:`TeacherSettings` fields (its ``retry`` policy included) from the parsed ``options``."""
    retry = RetryPolicy(**_field_values(args, options, RetryPolicy))
    return {**_field_values(args, options, TeacherSettings), "retry": retry}


def add_request_arguments(group: argparse._ActionsContainer) -> None:
    """Add how requests reach an OpenAI-compatible server (``rdmldg build --teacher``, ``rdmldg eval --api``)."""
    _add_options(group, REQUEST_OPTIONS)


def request_settings(args: argparse.Namespace) -> dict[str, Any]:
    """:class:`TeacherSettings` fields from parsed :func:`add_request_arguments` options."""
    return _teacher_fields(args, REQUEST_OPTIONS)


def add_teacher_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the teacher's options (a group of its own) to a build parser."""
    group = parser.add_argument_group(
        "teacher", "Label-blind chains from an OpenAI-compatible API, rejection-sampled against the label."
    )
    _add_options(group, (*TEACHER_OPTIONS, *RUN_OPTIONS))


def settings_from_args(args: argparse.Namespace) -> TeacherSettings:
    """:class:`TeacherSettings` from parsed :func:`add_teacher_arguments` options."""
    if not args.teacher:
        raise ValueError("No teacher model: pass --teacher MODEL (e.g. --teacher gpt-4o).")
    sampling = SamplingSettings(**_field_values(args, TEACHER_OPTIONS, SamplingSettings))
    return TeacherSettings(sampling=sampling, **_teacher_fields(args, TEACHER_OPTIONS))


def teacher_chains(
    args: argparse.Namespace,
    benchmark: Benchmark | str,
    images: Sequence[SourceImage],
    out_dir: str | os.PathLike,
) -> Mapping[str, ChainRecord]:
    """Chains for ``images`` from the teacher named in ``args`` (resuming the store of ``out_dir``).

    Returns a mapping image id -> :class:`ChainRecord` for every image (null chains for
    images with none accepted or whose requests failed); ``.summary`` holds the build
    summary (acceptance per domain and class, tokens, estimated cost).
    """
    from .pipeline import generate_chains

    settings = settings_from_args(args)
    store_root = Path(args.teacher_store) if args.teacher_store else default_store_root(out_dir)
    if getattr(args, "mode", "sync") != "batch":
        return generate_chains(images, get_benchmark(benchmark), settings, store_root)
    from .batch import generate_chains_batch

    limits = BatchLimits(**_field_values(args, RUN_OPTIONS, BatchLimits))
    chains, report = generate_chains_batch(
        images,
        get_benchmark(benchmark),
        settings,
        store_root,
        limits=limits,
        wait=args.wait,
        poll_interval=args.poll_interval,
    )
    if report.submitted:
        print(f"Submitted {len(report.submitted)} batch(es): {', '.join(report.submitted)}")
    if report.collected:
        print(
            f"Collected {len(report.collected)} batch(es): {report.replies} replies, "
            f"{report.failed_requests} failed requests."
        )
    if report.adapted_requests:
        print(
            f"{report.adapted_requests} requests were refused for a parameter the model does not take; they are "
            "asked again without it (see server_adaptations in the build report)."
        )
    for problem, count, where in (
        ("results for unknown request ids (ignored)", report.unknown_ids, []),
        (
            "malformed result lines (their requests are asked again)",
            len(report.malformed_lines),
            report.malformed_lines,
        ),
        (
            "batches the server no longer knows (their requests are asked again)",
            len(report.lost_batches),
            report.lost_batches,
        ),
    ):
        if count:
            print(f"Warning: {count} {problem}{': ' + ', '.join(where[:10]) if where else ''}.")
    if chains is None:
        print("Batches are still running: run the same command again later to collect them (or add --wait).")
        raise SystemExit(0)
    return chains
