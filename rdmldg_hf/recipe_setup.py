"""What the recipes share: their arguments (TrlParser + YAML), the dataset and its split, the model, processor and
LoRA config."""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from datasets import DatasetDict, load_dataset
from trl import ModelConfig, TrlParser

from .benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from .embedded.tiny_models import ARCHITECTURES, build_tiny_model
from .generation import process_state
from .model_config import check_model_config, lora_config_from, model_loading_kwargs
from .models import load_model_and_processor
from .protocol import (
    DEFAULT_HOLDOUT_FRACTION,
    DEFAULT_HOLDOUT_SEED,
    DEFAULT_HOLDOUT_STYLE,
    HOLDOUT_STYLES,
    LodoSplit,
    lodo_split,
)

__all__ = [
    "RecipeScriptArguments",
    "parse_recipe_args",
    "unknown_fields_error",
    "use_cpu_cores",
    "DEFAULT_TINY_MODEL",
    "prepare_embedded_inputs",
    "load_training_dataset",
    "split_training_dataset",
    "load_model_for_training",
]


# The model trained when none is named: a tiny random LLaVA built there on first use.
DEFAULT_TINY_MODEL = "outputs/tiny-llava"


@dataclass
class RecipeScriptArguments:
    """The recipes' own arguments (beside the training config and TRL's ``ModelConfig``): what to train on and
    what to hold out. The split is made once, before training (:func:`split_training_dataset`); trainers train
    on what they are given."""

    dataset_name: str = field(
        default="outputs/domainbed-reasoning",
        metadata={"help": "Dataset folder or Hub id of DomainBed-Reasoning (e.g. rdmldg/domainbed-reasoning)."},
    )
    dataset_config: str = field(
        default=EMBEDDED_BENCHMARK,
        metadata={"help": "Config to load: a benchmark ('officehome'); splits are domains."},
    )
    test_domain: str | None = field(
        default=None,
        metadata={
            "help": "Domain held out for testing (leave-one-domain-out); the other domains are trained on. "
            "Unset: every domain is trained on."
        },
    )
    holdout_fraction: float = field(
        default=DEFAULT_HOLDOUT_FRACTION,
        metadata={
            "help": "Per training domain, the fraction of images kept out of training as validation data "
            "(the eval_dataset; DomainBed's in/out split). 0 trains on every image."
        },
    )
    holdout_seed: int = field(default=DEFAULT_HOLDOUT_SEED, metadata={"help": "Seed of the in/out split."})
    holdout_style: str = field(
        default=DEFAULT_HOLDOUT_STYLE,
        metadata={
            "help": "Which images the in/out split holds out: 'hash' (seeded hash of image_id, order-independent) "
            "or 'domainbed' (DomainBed's own split, image for image; the seed is its trial_seed).",
            "choices": list(HOLDOUT_STYLES),
        },
    )
    cpu_threads: int | None = field(
        default=None,
        metadata={
            "help": "Torch threads of a run that is one process on a CPU-only machine (default: every core; "
            "`accelerate launch` without --cpu sets OMP_NUM_THREADS=1). Ignored on GPUs and with several processes."
        },
    )
    use_kernels: bool = field(
        default=False,
        metadata={
            "help": "Hub kernels (transformers' use_kernels): layers replaced by optimized kernels fetched from the "
            "Hub (kernels-community/...) on GPUs. Off by default: they are code downloaded when training starts, "
            "and offline a kernel that is not cached would stop the run. On: every kernel is fetched before "
            "training; one that cannot be had leaves the PyTorch layer, with a warning."
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
    tiny_vocab_size: int | None = field(default=None, metadata={"help": "Vocabulary of a tiny model built here."})
    tiny_text_hidden: int | None = field(
        default=None, metadata={"help": "Hidden size of a tiny model's language model."}
    )
    tiny_text_layers: int | None = field(default=None, metadata={"help": "Layers of a tiny model's language model."})
    tiny_vision_hidden: int | None = field(
        default=None, metadata={"help": "Hidden size of a tiny model's vision tower."}
    )
    tiny_phrase_tokens: bool | None = field(
        default=None, metadata={"help": "Tiny model tokenizer merges across spaces (shorter chains, faster on CPU)."}
    )


def unknown_fields_error(
    config_path: str | os.PathLike | None, unknown: Sequence[str], valid: Iterable[str], section: str | None = None
) -> ValueError:
    """The error for fields of a recipe's YAML file (or of a mapping, ``config_path`` None) that nothing reads:
    each named, with the closest valid names."""
    valid = sorted(valid)
    hints = "".join(
        f" {key!r}: did you mean {', '.join(map(repr, close))}?"
        for key in unknown
        if (close := difflib.get_close_matches(key, valid, n=2))
    )
    where = f" in section {section!r}" if section else ""
    source = f"Config file {str(config_path)!r}: unknown" if config_path is not None else "Unknown"
    return ValueError(
        f"{source} field(s){where} {', '.join(unknown)}; no argument of this recipe reads them.{hints} "
        "Fix or remove them (`--help` or the recipe's docstring lists the fields)."
    )


def parse_recipe_args(
    dataclass_types: Sequence[type],
    args: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    description: str | None = None,
) -> tuple[Any, ...]:
    """One instance per dataclass from ``args`` (default: the command line) and the ``--config`` YAML they name.

    TRL's ``TrlParser``: YAML keys set the defaults, the command line overrides them. ``add_arguments`` adds
    plain argparse options (a command's option group); their values come last, as one ``argparse.Namespace``.

    Raises:
        ValueError: naming the YAML file and each of its fields that no argument reads (with the closest
            valid names), the command-line arguments that none reads, or a value a dataclass refuses.
    """
    parser = TrlParser(tuple(dataclass_types), description=description)
    if add_arguments is not None:
        add_arguments(parser)
    args = list(sys.argv[1:] if args is None else args)
    config_path = args[args.index("--config") + 1] if "--config" in args[:-1] else None
    try:
        *parsed, from_config, from_command_line = parser.parse_args_and_config(
            args, return_remaining_strings=True, separate_remaining_strings=True
        )
    except ValueError as error:
        if config_path is None or config_path in str(error):
            raise
        raise ValueError(f"Config file {config_path!r} (with the command line): {error}") from error
    if from_config:
        unknown = [key[2:] for key in from_config[0::2]]  # TrlParser returns each unread key as "--key", "value"
        valid = {action.dest for action in parser._actions} - {"help"}
        raise unknown_fields_error(config_path, unknown, valid)
    if from_command_line:
        raise ValueError(f"Unknown command-line arguments {from_command_line}; `--help` lists every argument.")
    return tuple(parsed)


def use_cpu_cores(threads: int | None = None) -> int:
    """Give a single CPU-only process ``threads`` torch threads (default: every core); returns the count in use."""
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if single_process and not torch.accelerator.is_available():
        torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def prepare_embedded_inputs(script_args: RecipeScriptArguments, model_args: ModelConfig) -> None:
    """Build the embedded dataset and a tiny model when asked for and missing (main process first).

    No ``model_name_or_path``: a tiny LLaVA at :data:`DEFAULT_TINY_MODEL`. A ``tiny_model`` (an architecture of
    :func:`rdmldg_hf.embedded.build_tiny_model`) is built at ``model_name_or_path`` with the ``tiny_*`` sizes
    (unset ones keep the factory's defaults).
    """
    from .data.build import build_embedded_once

    if model_args.model_name_or_path is None:
        model_args.model_name_or_path = DEFAULT_TINY_MODEL
        script_args.tiny_model = script_args.tiny_model or "llava"
    if script_args.dataset_config == EMBEDDED_BENCHMARK:
        summary = build_embedded_once(script_args.dataset_name)
        if summary is not None:
            print(summary.format())
    model_dir = Path(model_args.model_name_or_path)
    state = process_state()
    with state.main_process_first():
        if script_args.tiny_model and not (model_dir / "config.json").exists() and state.is_main_process:
            sizes = {
                "vocab_size": script_args.tiny_vocab_size,
                "text_hidden": script_args.tiny_text_hidden,
                "text_layers": script_args.tiny_text_layers,
                "vision_hidden": script_args.tiny_vision_hidden,
                "phrase_tokens": script_args.tiny_phrase_tokens,
            }
            build_tiny_model(model_dir, script_args.tiny_model, **{k: v for k, v in sizes.items() if v is not None})


def load_training_dataset(dataset_name: str, dataset_config: str, training_args: Any) -> DatasetDict:
    """Load a DomainBed-Reasoning config (splits are domains); set ``training_args.benchmark`` from it if unset."""
    dataset = load_dataset(dataset_name, dataset_config)
    if getattr(training_args, "benchmark", None) is None and dataset_config in BENCHMARKS:
        training_args.benchmark = dataset_config
    return dataset


def split_training_dataset(dataset: DatasetDict, script_args: RecipeScriptArguments) -> LodoSplit:
    """The recipe's split of ``dataset``: its ``test_domain`` held out, the holdout's out-part as validation."""
    return lodo_split(
        dataset,
        script_args.test_domain,
        script_args.holdout_fraction,
        script_args.holdout_seed,
        holdout_style=script_args.holdout_style,
    )


def load_model_for_training(
    model_args: ModelConfig, training_args: Any = None, use_kernels: bool = False
) -> tuple[Any, Any, Any]:
    """``(model, processor, peft_config)`` from TRL's ``ModelConfig``; ``peft_config`` is None without ``use_peft``.

    Every ``ModelConfig`` field is honoured (4/8-bit loading included) or refused before loading, see
    :mod:`rdmldg_hf.model_config`; ``training_args`` (when given) has its ``trust_remote_code`` checked.
    ``use_kernels`` turns on Hub kernels for this process's device (:func:`rdmldg_hf.models.use_hub_kernels`).
    """
    check_model_config(model_args, trust_remote_code=getattr(training_args, "trust_remote_code", False))
    model, processor = load_model_and_processor(
        model_args.model_name_or_path, use_kernels=use_kernels, **model_loading_kwargs(model_args)
    )
    return model, processor, lora_config_from(model_args)
