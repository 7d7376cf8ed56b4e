"""What the training recipes share: the dataset, model, processor and LoRA config from their arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
import difflib
import os
import sys
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from datasets import DatasetDict, load_dataset
from trl import ModelConfig, TrlParser

from .benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from .generation import process_state
from .model_config import check_model_config, lora_config_from, model_loading_kwargs
from .models import load_model_and_processor
from .testing import ARCHITECTURES, build_tiny_model

__all__ = [
    "RecipeScriptArguments",
    "parse_recipe_args",
    "unknown_fields_error",
    "use_cpu_cores",
    "prepare_embedded_inputs",
    "load_training_dataset",
    "load_model_for_training",
]


@dataclass
class RecipeScriptArguments:
    """The recipes' own arguments (beside the training config and TRL's ``ModelConfig``): what to train on."""

    dataset_name: str = field(
        default="outputs/domainbed-reasoning",
        metadata={"help": "Dataset folder or Hub id of DomainBed-Reasoning (e.g. rdmldg/domainbed-reasoning)."},
    )
    dataset_config: str = field(
        default=EMBEDDED_BENCHMARK, metadata={"help": "Config to load: a benchmark ('officehome'); splits are domains."}
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Torch threads of a run that is one process on a CPU-only machine (default: every core; "
            "`accelerate launch` without --cpu sets OMP_NUM_THREADS=1). Ignored on GPUs and with several processes."
        },
    )
    tiny_model: str | None = field(
        default=None,
        metadata={
            "help": "Build a tiny random model of this architecture at model_name_or_path when that folder does "
            "not exist (for CPU runs of the embedded benchmark).",
            "choices": list(ARCHITECTURES),
        },
    )


def unknown_fields_error(
    config_path: str | os.PathLike, unknown: Sequence[str], valid: Iterable[str], section: str | None = None
) -> ValueError:
    """The error for fields of a recipe's YAML file that nothing reads: each named, with the closest valid names."""
    valid = sorted(valid)
    hints = "".join(
        f" {key!r}: did you mean {', '.join(map(repr, close))}?"
        for key in unknown
        if (close := difflib.get_close_matches(key, valid, n=2))
    )
    where = f" in section {section!r}" if section else ""
    return ValueError(
        f"Config file {str(config_path)!r}: unknown field(s){where} {', '.join(unknown)}; no argument of this "
        f"recipe reads them.{hints} Fix or remove them (`--help` or the recipe's docstring lists the fields)."
    )


def parse_recipe_args(dataclass_types: Sequence[type], args: Sequence[str] | None = None) -> tuple[Any, ...]:
    """One instance per dataclass from ``args`` (default: the command line) and the ``--config`` YAML they name.

    TRL's ``TrlParser``: YAML keys set the defaults, the command line overrides them.

    Raises:
        ValueError: naming the YAML file and each of its fields that no dataclass reads (with the closest
            valid names), or the command-line arguments that none reads.
    """
    parser = TrlParser(tuple(dataclass_types))
    args = list(sys.argv[1:] if args is None else args)
    *parsed, from_config, from_command_line = parser.parse_args_and_config(
        args, return_remaining_strings=True, separate_remaining_strings=True
    )
    if from_config:
        unknown = [key[2:] for key in from_config[0::2]]  # TrlParser returns each unread key as "--key", "value"
        valid = {action.dest for action in parser._actions} - {"help"}
        raise unknown_fields_error(args[args.index("--config") + 1], unknown, valid)
    if from_command_line:
        raise ValueError(f"Unknown command-line arguments {from_command_line}; `--help` lists every argument.")
    return tuple(parsed)


def use_cpu_cores(threads: int | None = None) -> int:
    """Give a single CPU-only process ``threads`` torch threads (default: every core); returns the count in use."""
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if single_process and not torch.accelerator.is_available():
        torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def prepare_embedded_inputs(
    dataset_name: str, dataset_config: str, model_dir: str, tiny_model: str | None, **tiny_model_options: Any
) -> None:
    """Build the embedded dataset and a tiny model when asked for and missing (main process first).

    ``tiny_model`` is an architecture of :func:`rdmldg_hf.testing.build_tiny_model`, built at
    ``model_dir`` with ``tiny_model_options`` (options set to None keep the factory's defaults).
    """
    state = process_state()
    with state.main_process_first():
        folder = Path(dataset_name)
        if dataset_config == EMBEDDED_BENCHMARK and not (folder / EMBEDDED_BENCHMARK).exists():
            from .data.build import build_dataset

            if state.is_main_process:
                print(build_dataset(EMBEDDED_BENCHMARK, folder).format())
        if tiny_model and not (Path(model_dir) / "config.json").exists() and state.is_main_process:
            options = {name: value for name, value in tiny_model_options.items() if value is not None}
            build_tiny_model(Path(model_dir), tiny_model, **options)


def load_training_dataset(dataset_name: str, dataset_config: str, training_args: Any) -> DatasetDict:
    """Load a DomainBed-Reasoning config (splits are domains); set ``training_args.benchmark`` from it if unset."""
    dataset = load_dataset(dataset_name, dataset_config)
    if getattr(training_args, "benchmark", None) is None and dataset_config in BENCHMARKS:
        training_args.benchmark = dataset_config
    return dataset


def load_model_for_training(model_args: ModelConfig, training_args: Any = None) -> tuple[Any, Any, Any]:
    """``(model, processor, peft_config)`` from TRL's ``ModelConfig``; ``peft_config`` is None without ``use_peft``.

    Every ``ModelConfig`` field is honoured (4/8-bit loading included) or refused before loading, see
    :mod:`rdmldg_hf.model_config`; ``training_args`` (when given) has its ``trust_remote_code`` checked.
    """
    check_model_config(model_args, trust_remote_code=getattr(training_args, "trust_remote_code", False))
    model, processor = load_model_and_processor(model_args.model_name_or_path, **model_loading_kwargs(model_args))
    return model, processor, lora_config_from(model_args)
