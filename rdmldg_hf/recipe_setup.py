"""What the recipes share: their arguments (TrlParser + YAML), the dataset and its split, the model, processor and
LoRA config."""

from __future__ import annotations

import argparse
import difflib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from datasets import DatasetDict, load_dataset
from trl import ModelConfig, TrlParser

from .benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from .embedded.tiny_models import ARCHITECTURES, TINY_PRESETS, TinyModelSpec, build_tiny_model, check_tiny_model
from .generation import process_state
from .methods import packaged_config
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
    "TinyModelArguments",
    "RecipeScriptArguments",
    "parse_recipe_args",
    "resolve_config_argument",
    "split_recipe_args",
    "unknown_fields_error",
    "use_cpu_cores",
    "DEFAULT_TINY_MODEL",
    "DEFAULT_DATASET_DIR",
    "DEPRECATED_TINY_FIELDS",
    "embedded_model_path",
    "prepare_embedded_default",
    "prepare_embedded_inputs",
    "load_training_dataset",
    "split_training_dataset",
    "load_model_for_training",
]


# The model trained when none is named: a tiny random model (of DEFAULT_TINY_ARCHITECTURE) built there on first use.
DEFAULT_TINY_MODEL = "outputs/tiny-llava"
DEFAULT_TINY_ARCHITECTURE = "llava"
# Where the embedded benchmark is built when no dataset is named.
DEFAULT_DATASET_DIR = "outputs/domainbed-reasoning"

# The flat fields of earlier versions -> the TinyModelSpec field of tiny_sizes that each one sets now.
DEPRECATED_TINY_FIELDS = {
    "tiny_vocab_size": "vocab_size",
    "tiny_text_hidden": "text_hidden",
    "tiny_text_layers": "text_layers",
    "tiny_vision_hidden": "vision_hidden",
    "tiny_phrase_tokens": "phrase_tokens",
}


def _deprecated_tiny_field(size: str) -> Any:
    return field(default=None, metadata={"help": f"Deprecated: use tiny_sizes {{{size}: ...}}."})


@dataclass
class TinyModelArguments:
    """How a run asks for the embedded default's model, the same in the recipes, LODO and sweeps: a tiny random
    model (:func:`rdmldg_hf.embedded.build_tiny_model`) built where the run looks for its model when that folder
    holds none (:func:`prepare_embedded_default`). The flat ``tiny_vocab_size``, ``tiny_text_hidden``, ... fields
    of earlier versions still work, with a ``FutureWarning`` naming their ``tiny_sizes`` spelling."""

    tiny_model: str | None = field(
        default=None,
        metadata={
            "help": "Build a tiny random model of this architecture at model_name_or_path when that folder holds "
            "no model (for CPU runs of the embedded benchmark). model_name_or_path unset: a tiny "
            f"{DEFAULT_TINY_ARCHITECTURE} at the run's default folder.",
            "choices": list(ARCHITECTURES),
        },
    )
    tiny_preset: str = field(
        default="embedded",
        metadata={
            "help": "Preset of a tiny model built here: 'embedded' (~0.9M parameters) or 'test' (smaller).",
            "choices": list(TINY_PRESETS),
        },
    )
    tiny_sizes: dict | str | None = field(
        default_factory=dict,
        metadata={
            "help": "TinyModelSpec fields overriding the preset of a tiny model built here, e.g. {vocab_size: 1536, "
            "phrase_tokens: true, text_hidden: 64} (JSON on the command line)."
        },
    )
    tiny_vocab_size: int | None = _deprecated_tiny_field("vocab_size")
    tiny_text_hidden: int | None = _deprecated_tiny_field("text_hidden")
    tiny_text_layers: int | None = _deprecated_tiny_field("text_layers")
    tiny_vision_hidden: int | None = _deprecated_tiny_field("vision_hidden")
    tiny_phrase_tokens: bool | None = _deprecated_tiny_field("phrase_tokens")

    def __post_init__(self) -> None:
        sizes = self.tiny_sizes
        self.tiny_sizes = json.loads(sizes) if isinstance(sizes, str) else dict(sizes or {})
        for old, new in DEPRECATED_TINY_FIELDS.items():
            value = getattr(self, old)
            if value is None:
                continue
            warnings.warn(
                f"{old} is deprecated; use tiny_sizes: {{{new}: {json.dumps(value)}}} in the YAML "
                f"(--tiny_sizes '{json.dumps({new: value})}' on the command line).",
                FutureWarning,
                stacklevel=3,
            )
            if self.tiny_sizes.get(new, value) != value:
                raise ValueError(
                    f"{old}={value!r} and tiny_sizes {new}={self.tiny_sizes[new]!r} disagree; keep tiny_sizes only."
                )
            self.tiny_sizes[new] = value
            setattr(self, old, None)
        valid = {spec.name for spec in fields(TinyModelSpec)}
        wrong = [key for key in self.tiny_sizes if key not in valid]
        if wrong:
            raise unknown_fields_error(None, wrong, valid, "tiny_sizes")
        check_tiny_model(self.tiny_model or DEFAULT_TINY_ARCHITECTURE, self.tiny_preset)


@dataclass
class RecipeScriptArguments(TinyModelArguments):
    """The recipes' own arguments (beside the training config and TRL's ``ModelConfig``): what to train on and
    what to hold out. The split is made once, before training (:func:`split_training_dataset`); trainers train
    on what they are given."""

    dataset_name: str = field(
        default=DEFAULT_DATASET_DIR,
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


def resolve_config_argument(args: Sequence[str]) -> list[str]:
    """``args`` with the value of ``--config`` turned into a path: a file as given, or a bare name
    (``sarr_internvl3_8b.yaml``) that is no file here the config of that name shipped in the package.

    Raises:
        FileNotFoundError: the value is neither a file nor a packaged config, naming the packaged ones.
    """
    args = list(args)
    if "--config" in args[:-1]:
        at = args.index("--config") + 1
        if not Path(args[at]).is_file():
            if Path(args[at]).name != args[at]:
                raise FileNotFoundError(f"Config file {args[at]!r} not found.")
            try:
                args[at] = str(packaged_config(args[at]))
            except FileNotFoundError as error:
                raise FileNotFoundError(f"Config file {args[at]!r} not found here, and {error}") from None
    return args


def _parse(parser: TrlParser, args: Sequence[str] | None) -> tuple[tuple[Any, ...], list[str]]:
    """The dataclasses of ``parser`` from ``args`` (default: the command line) and their ``--config`` YAML, and the
    command-line arguments none of them reads; a YAML field none reads is an error."""
    args = resolve_config_argument(sys.argv[1:] if args is None else args)
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
    return tuple(parsed), list(from_command_line)


def parse_recipe_args(
    dataclass_types: Sequence[type],
    args: Sequence[str] | None = None,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
    description: str | None = None,
) -> tuple[Any, ...]:
    """One instance per dataclass from ``args`` (default: the command line) and the ``--config`` YAML they name
    (a file, or the name of a config shipped in the package).

    TRL's ``TrlParser``: YAML keys set the defaults, the command line overrides them. ``add_arguments`` adds
    plain argparse options (a command's option group); their values come last, as one ``argparse.Namespace``.

    Raises:
        ValueError: naming the YAML file and each of its fields that no argument reads (with the closest
            valid names), the command-line arguments that none reads, or a value a dataclass refuses.
    """
    parser = TrlParser(tuple(dataclass_types), description=description)
    if add_arguments is not None:
        add_arguments(parser)
    parsed, from_command_line = _parse(parser, args)
    if from_command_line:
        raise ValueError(f"Unknown command-line arguments {from_command_line}; `--help` lists every argument.")
    return parsed


def split_recipe_args(
    dataclass_types: Sequence[type], args: Sequence[str], description: str | None = None, prog: str | None = None
) -> tuple[tuple[Any, ...], list[str]]:
    """As :func:`parse_recipe_args`, with the command-line arguments that none of the dataclasses reads returned (in
    order) rather than refused: what ``rdmldg train`` passes to ``accelerate launch``. Options are never abbreviated
    (``--cpu`` is accelerate's, not ``--cpu_threads``)."""
    return _parse(TrlParser(tuple(dataclass_types), prog=prog, description=description, allow_abbrev=False), args)


def use_cpu_cores(threads: int | None = None) -> int:
    """Give a single CPU-only process ``threads`` torch threads (default: every core); returns the count in use."""
    single_process = int(os.environ.get("WORLD_SIZE", "1")) == 1
    if single_process and not torch.accelerator.is_available():
        torch.set_num_threads(threads or os.cpu_count() or 1)
    return torch.get_num_threads()


def embedded_model_path(
    tiny: TinyModelArguments, model_name_or_path: str | os.PathLike | None, default_dir: str | os.PathLike
) -> str:
    """The model a run trains: ``model_name_or_path``, or (unset) ``default_dir``, where
    :func:`prepare_embedded_default` builds a tiny model of ``tiny.tiny_model`` (set to the default architecture here
    when unset)."""
    if model_name_or_path is not None:
        return str(model_name_or_path)
    tiny.tiny_model = tiny.tiny_model or DEFAULT_TINY_ARCHITECTURE
    return str(default_dir)


def prepare_embedded_default(
    tiny: TinyModelArguments,
    dataset_name: str | os.PathLike | None,
    dataset_config: str,
    model_name_or_path: str | os.PathLike | None,
    *,
    dataset_dir: str | os.PathLike = DEFAULT_DATASET_DIR,
    model_dir: str | os.PathLike = DEFAULT_TINY_MODEL,
) -> tuple[str, str]:
    """Build what a run asks of the embedded default and lacks (the main process first, the others wait); the one
    way recipes, LODO and sweeps prepare it.

    The embedded benchmark is built into ``dataset_name`` (unset: ``dataset_dir``) when ``dataset_config`` is it and
    the folder does not hold it; a tiny model (:class:`TinyModelArguments`) at ``model_name_or_path`` (unset:
    ``model_dir``, see :func:`embedded_model_path`) when ``tiny_model`` is set and the folder holds no model.

    Returns:
        ``(dataset_name, model_name_or_path)`` to load.

    Raises:
        ValueError: with ``dataset_name`` unset, when ``dataset_config`` is not the embedded benchmark.
    """
    from .data.build import build_embedded_once

    if dataset_name is None:
        if dataset_config != EMBEDDED_BENCHMARK:
            raise ValueError(
                f"dataset_name is unset, so the embedded benchmark {EMBEDDED_BENCHMARK!r} is built, but "
                f"dataset_config is {dataset_config!r}: set dataset_name to a DomainBed-Reasoning "
                "folder or Hub id holding that config."
            )
        dataset_name = dataset_dir
    if dataset_config == EMBEDDED_BENCHMARK:
        summary = build_embedded_once(dataset_name)
        if summary is not None:
            print(summary.format())
    model_path = embedded_model_path(tiny, model_name_or_path, model_dir)
    state = process_state()
    with state.main_process_first():
        if tiny.tiny_model and not (Path(model_path) / "config.json").exists() and state.is_main_process:
            build_tiny_model(model_path, tiny.tiny_model, preset=tiny.tiny_preset, **tiny.tiny_sizes)
    return str(dataset_name), model_path


def prepare_embedded_inputs(script_args: RecipeScriptArguments, model_args: ModelConfig) -> None:
    """A recipe's :func:`prepare_embedded_default`: its ``dataset_name`` and ``model_name_or_path`` set to what to
    load (no ``model_name_or_path``: a tiny LLaVA at :data:`DEFAULT_TINY_MODEL`)."""
    script_args.dataset_name, model_args.model_name_or_path = prepare_embedded_default(
        script_args, script_args.dataset_name, script_args.dataset_config, model_args.model_name_or_path
    )


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
