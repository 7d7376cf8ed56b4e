"""What the training recipes share: the dataset, model, processor and LoRA config from their arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
import os
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict, load_dataset
from trl import ModelConfig

from .benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from .generation import process_state
from .models import default_lora_config, load_model_and_processor
from .testing import ARCHITECTURES, build_tiny_model

__all__ = ["RecipeScriptArguments", "use_cpu_cores", "prepare_embedded_inputs", "load_training_dataset", "load_model_for_training"]


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


def load_model_for_training(model_args: ModelConfig) -> tuple[Any, Any, Any]:
    """``(model, processor, peft_config)`` from TRL's ``ModelConfig``; ``peft_config`` is None without ``use_peft``."""
    loading = {"revision": model_args.model_revision, "attn_implementation": model_args.attn_implementation}
    model, processor = load_model_and_processor(
        model_args.model_name_or_path,
        dtype=model_args.dtype or "auto",
        **{key: value for key, value in loading.items() if value is not None},
    )
    peft_config = None
    if model_args.use_peft:
        peft_config = default_lora_config(
            r=model_args.lora_r,
            alpha=model_args.lora_alpha,
            dropout=model_args.lora_dropout,
            target_modules=model_args.lora_target_modules,
            use_rslora=model_args.use_rslora,
            use_dora=model_args.use_dora,
        )
    return model, processor, peft_config
