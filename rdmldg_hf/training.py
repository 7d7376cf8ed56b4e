"""One function per recipe: load the data and the model, split once, train, save and report.

``rdmldg train NAME``, ``recipes/NAME.py`` and the process ``rdmldg train`` launches run :func:`run_recipe`: it
parses the recipe's dataclasses (script arguments, the training config, TRL's ``ModelConfig``; LODO's
``LodoConfig``) from the command line and its ``--config`` YAML (none given: the recipe's packaged default config)
and runs them. The recipes are registered in :data:`rdmldg_hf.methods.RECIPES`; in Python:

    script_args, training_args, model_args = parse_method_args("sarr", ["--config", "sarr_tiny.yaml"])
    run_sarr(script_args, training_args, model_args)
"""

from __future__ import annotations

import logging
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from datasets import DatasetDict
from trl import ModelConfig

from .deprecation import moved
from .evaluation.lodo_config import LodoConfig
from .evaluation.predict import PREDICTIONS_NAME
from .evaluation.stages import REASONING_EVALUATIONS, StageEvaluation, summary_table, write_run_results
from .experiments.hparams import default_hparams
from .experiments.lodo import LodoRunner
from .experiments.records import RecordsCallback, RecordWriter, mark_done, record_args
from .generation import process_state
from .methods import METHODS, RECIPES, TrainingMethod, get_recipe, method_of
from .protocol import CheckpointSelector, find_benchmark
from .protocol.environments import check_test_envs, dataset_environments, environment_split
from .recipe_setup import (
    RecipeScriptArguments,
    load_model_for_training,
    load_training_dataset,
    parse_recipe_args,
    prepare_embedded_inputs,
    split_training_dataset,
    use_cpu_cores,
)
from .trainers import MTCTConfig, MTCTTrainer, SARRConfig, SARRTrainer

__all__ = [
    "RecordsArguments",
    "MTCTScriptArguments",
    "SARRScriptArguments",
    "TrainingMethod",
    "MTCT",
    "SARR",
    "LODO",
    "parse_method_args",
    "run_recipe",
    "run_mtct",
    "run_sarr",
    "run_lodo",
]


@dataclass
class RecordsArguments:
    """Per-checkpoint records (DomainBed's ``results.jsonl``) of a recipe run, and selection on them."""

    records_every: str | None = field(
        default=None,
        metadata={
            "help": "Write per-checkpoint records (DomainBed's results.jsonl in output_dir: every domain's in and out "
            "accuracy, direct answers) every N steps ('epoch': each epoch's end; SARR: also each stage's end) and at "
            "the end, then save (and push) the checkpoint that training-domain validation selects on them (needs "
            "holdout_fraction > 0). Unset: no records; the last checkpoint is saved."
        },
    )


@dataclass
class MTCTScriptArguments(RecipeScriptArguments, RecordsArguments):
    """Arguments of an MTCT run beside MTCTConfig and ModelConfig."""


@dataclass
class SARRScriptArguments(RecipeScriptArguments, RecordsArguments):
    """Arguments of a SARR run beside SARRConfig and ModelConfig: the evaluation after each stage."""

    eval_batch_size: int = field(
        default=64, metadata={"help": "Images per batch when scoring and generating for evaluation."}
    )
    eval_reasoning: str = field(
        default="final",
        metadata={
            "help": "When to measure reasoning-mode accuracy on the held-out domain (generate a chain, parse its "
            "conclusion): 'final', 'every_stage' or 'never'. Direct-answer accuracy is measured after every stage.",
            "choices": list(REASONING_EVALUATIONS),
        },
    )


def _records(
    script_args: RecipeScriptArguments | RecordsArguments,
    training_args: MTCTConfig,
    model_args: ModelConfig,
    dataset: DatasetDict,
    processor: Any,
    trainer: str,
) -> RecordsCallback | None:
    """The records callback of a recipe run (``records_every`` set), with its selector."""
    if script_args.records_every is None:
        return None
    every = script_args.records_every
    every = int(every) if str(every).isdigit() else every
    test = [script_args.test_domain] if script_args.test_domain is not None else []
    split = environment_split(
        dataset,
        check_test_envs(test, dataset_environments(dataset)),
        script_args.holdout_fraction,
        script_args.holdout_seed,
        holdout_style=script_args.holdout_style,
    )
    benchmark = find_benchmark(dataset, training_args.benchmark)
    args = record_args(
        benchmark,
        method_of(trainer, training_args.mode) or f"{trainer}_{training_args.mode}",
        split.test_envs,
        hparams_seed=0,
        trial_seed=script_args.holdout_seed,
        holdout_fraction=script_args.holdout_fraction,
        holdout_style=script_args.holdout_style,
        seed=training_args.seed,
        steps=training_args.max_steps if training_args.max_steps > 0 else None,
        checkpoint_freq=every,
        dataset_name=script_args.dataset_name,
        dataset_config=script_args.dataset_config,
        model_name_or_path=model_args.model_name_or_path,
    )
    config = {**training_args.to_dict(), "lora_r": model_args.lora_r if model_args.use_peft else None}
    writer = RecordWriter(
        training_args.output_dir,
        args,
        default_hparams(config),
        split,
        processor,
        benchmark,
        batch_size=training_args.per_device_eval_batch_size,
    )
    return RecordsCallback(writer, every, CheckpointSelector())


def _restore_selected(records: RecordsCallback | None, model: Any) -> None:
    """Put the selected checkpoint's weights back into ``model`` (with records), so that it is what is saved."""
    if records is not None:
        records.selector.restore(model)
        print(f"Training-domain validation selects {records.selector.best_at} ({records.selector.best:.4f}).")


def _start_run(
    trainer_class: type, script_args: Any, training_args: Any, model_args: ModelConfig, method: str
) -> tuple[Any, Any, RecordsCallback | None]:
    """What a training run starts from: ``(trainer, splits, records)`` (the embedded default built if
    asked for; the dataset split once; the records callback when the run writes records; the trainer of
    ``trainer_class`` on the training in-part, evaluated on its out-part)."""
    prepare_embedded_inputs(script_args, model_args)
    dataset = load_training_dataset(script_args.dataset_name, script_args.dataset_config, training_args)
    splits = split_training_dataset(dataset, script_args)
    model, processor, peft_config = load_model_for_training(model_args, training_args, script_args.use_kernels)
    records = _records(script_args, training_args, model_args, dataset, processor, method)
    trainer = trainer_class(
        model=model,
        args=training_args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=peft_config,
        split_record=splits.record(),
        callbacks=[records] if records else None,
    )
    return trainer, splits, records


def run_mtct(script_args: MTCTScriptArguments, training_args: MTCTConfig, model_args: ModelConfig) -> MTCTTrainer:
    """MTCT on the training domains' in-part, evaluated on their out-part; saves the model (with
    ``rdmldg_config.json`` and ``trainer_state.json``) to ``output_dir`` and pushes it when ``push_to_hub``."""
    trainer, _, records = _start_run(MTCTTrainer, script_args, training_args, model_args, "mtct")
    trainer.accelerator.print(trainer.mtct_data.stats.summary())
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    _restore_selected(records, trainer.accelerator.unwrap_model(trainer.model))
    trainer.save_state()  # trainer_state.json (the loss log for `rdmldg analyze losses`) whatever save_strategy says
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Saved to {training_args.output_dir} (with rdmldg_config.json).")
    if records is not None and trainer.accelerator.is_main_process:
        mark_done(training_args.output_dir)
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()
    return trainer


def run_sarr(script_args: SARRScriptArguments, training_args: SARRConfig, model_args: ModelConfig) -> dict[str, Any]:
    """The whole method (MTCT stage, then the SARR rounds), with accuracy after each stage; writes the model,
    ``results.json``, ``predictions.jsonl`` and the model card to ``output_dir`` and pushes them when
    ``push_to_hub`` (round datasets to ``<hub_model_id>-rounds``). Returns the results."""
    started = time.time()
    trainer, splits, records = _start_run(SARRTrainer, script_args, training_args, model_args, "sarr")
    evaluation = StageEvaluation(
        trainer.processing_class,
        trainer.benchmark,
        splits.test,
        splits.validation,
        trainer.stages[-1],
        batch_size=script_args.eval_batch_size,
        max_new_tokens=training_args.relabel_max_new_tokens,
        reasoning=script_args.eval_reasoning,
    )
    trainer.stage_callback = evaluation
    stages = trainer.train()
    _restore_selected(records, trainer.model)
    out = trainer.save_model()
    results = trainer.results_summary(stages, wall_seconds=time.time() - started)
    results["images"]["heldout"] = len(splits.test)
    state = process_state()
    if state.is_main_process:
        write_run_results(out, results, evaluation.predictions)
        trainer.create_model_card(dataset_name=script_args.dataset_name)
        print(summary_table(results))
        print(
            f"Saved to {out}: results.json, {PREDICTIONS_NAME} (the final model's per-image predictions), "
            "rdmldg_config.json, README.md (model card), dataset/ (round configs)."
        )
    if records is not None and state.is_main_process:
        mark_done(out)
    if training_args.push_to_hub:  # every process takes part; the main one uploads
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    state.destroy_process_group()
    return results


def run_lodo(config: LodoConfig) -> dict[str, Any]:
    """The leave-one-domain-out ablation of ``config``: writes ``results.json`` and ``results.md`` to its
    ``output_dir`` (resuming a killed run) and prints the tables. Returns the results."""
    runner = LodoRunner(config)
    results = runner.run()
    state = process_state()
    if state.is_main_process:
        print((runner.out / "results.md").read_text())
        print(f"Wrote {runner.results_path} and {runner.out / 'results.md'}")
    state.wait_for_everyone()
    return results


MTCT = TrainingMethod((MTCTScriptArguments, MTCTConfig, ModelConfig), run_mtct)
SARR = TrainingMethod((SARRScriptArguments, SARRConfig, ModelConfig), run_sarr)
LODO = TrainingMethod((LodoConfig,), run_lodo)


# Arguments that choose what to train on: without any of them (and without --config) a run is the embedded default.
_CHOOSING_ARGUMENTS = ("--config", "--model_name_or_path", "--dataset_name")


def runs_embedded_default(argv: Sequence[str]) -> bool:
    """Whether ``argv`` names neither a config, a model nor a dataset: it then tweaks the embedded default."""
    return not any(arg == name or arg.startswith(f"{name}=") for arg in argv for name in _CHOOSING_ARGUMENTS)


def parse_method_args(name: str, argv: Sequence[str] | None = None) -> tuple[Any, ...]:
    """Recipe ``name``'s arguments from ``argv`` (default: the command line) and the ``--config`` YAML it names.

    Without ``--config``, ``--model_name_or_path`` and ``--dataset_name`` the run is the embedded default: the
    recipe's packaged default config, with ``argv`` overriding its fields (``recipes/sarr.py --bf16 true``).
    """
    recipe = get_recipe(name)
    argv = list(sys.argv[1:] if argv is None else argv)
    if runs_embedded_default(argv):
        argv = ["--config", str(recipe.config_path), *argv]
    return parse_recipe_args(recipe.load().argument_types, argv, description=recipe.help)


def run_recipe(name: str, argv: Sequence[str] | None = None) -> Any:
    """Run recipe ``name`` on ``argv`` (see :func:`parse_method_args`), as ``recipes/NAME.py`` and ``rdmldg train``
    do: INFO logs, a single CPU process on every core (or ``cpu_threads``)."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    parsed = parse_method_args(name, argv)
    if isinstance(parsed[0], RecipeScriptArguments):
        use_cpu_cores(parsed[0].cpu_threads)
    return get_recipe(name).load().run(*parsed)


def __getattr__(name: str) -> Any:
    if name == "TRAINING_METHODS":  # the recipes that train one model, before rdmldg_hf.methods.RECIPES
        trainers = dict.fromkeys(spec.trainer for spec in METHODS.values())
        table = {trainer: RECIPES[trainer].load() for trainer in trainers}
        return moved(f"{__name__}.TRAINING_METHODS", "rdmldg_hf.methods.RECIPES[name].load()", table)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
