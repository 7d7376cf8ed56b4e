"""One function per method: load the data and the model, split once, train, save and report.

The recipes (``recipes/mtct.py``, ``recipes/sarr.py``) and ``rdmldg train`` call these with the
dataclasses they parse (script arguments, the training config, TRL's ``ModelConfig``):

    script_args, training_args, model_args = parse_recipe_args(TRAINING_METHODS["sarr"].argument_types, argv)
    run_sarr(script_args, training_args, model_args)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable

from trl import ModelConfig

from .evaluation.predict import PREDICTIONS_NAME
from .evaluation.stages import REASONING_EVALUATIONS, StageEvaluation, summary_table, write_run_results
from .generation import process_state
from .recipe_setup import (
    RecipeScriptArguments,
    load_model_for_training,
    load_training_dataset,
    prepare_embedded_inputs,
    split_training_dataset,
)
from .trainers import MTCTConfig, MTCTTrainer, SARRConfig, SARRTrainer

__all__ = [
    "MTCTScriptArguments",
    "SARRScriptArguments",
    "TrainingMethod",
    "TRAINING_METHODS",
    "run_mtct",
    "run_sarr",
]


@dataclass
class MTCTScriptArguments(RecipeScriptArguments):
    """Arguments of an MTCT run beside MTCTConfig and ModelConfig."""


@dataclass
class SARRScriptArguments(RecipeScriptArguments):
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


def run_mtct(script_args: MTCTScriptArguments, training_args: MTCTConfig, model_args: ModelConfig) -> MTCTTrainer:
    """MTCT on the training domains' in-part, evaluated on their out-part; saves the model (with
    ``rdmldg_config.json`` and ``trainer_state.json``) to ``output_dir`` and pushes it when ``push_to_hub``."""
    prepare_embedded_inputs(script_args, model_args)
    dataset = load_training_dataset(script_args.dataset_name, script_args.dataset_config, training_args)
    splits = split_training_dataset(dataset, script_args)
    model, processor, peft_config = load_model_for_training(model_args, training_args, script_args.use_kernels)
    trainer = MTCTTrainer(
        model=model,
        args=training_args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=peft_config,
        split_record=splits.record(),
    )
    trainer.accelerator.print(trainer.mtct_data.stats.summary())
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_state()  # trainer_state.json (the loss log for `rdmldg analyze losses`) whatever save_strategy says
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Saved to {training_args.output_dir} (with rdmldg_config.json).")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()
    return trainer


def run_sarr(script_args: SARRScriptArguments, training_args: SARRConfig, model_args: ModelConfig) -> dict[str, Any]:
    """The whole method (MTCT stage, then the SARR rounds), with accuracy after each stage; writes the model,
    ``results.json``, ``predictions.jsonl`` and the model card to ``output_dir`` and pushes them when
    ``push_to_hub`` (round datasets to ``<hub_model_id>-rounds``). Returns the results."""
    started = time.time()
    prepare_embedded_inputs(script_args, model_args)
    dataset = load_training_dataset(script_args.dataset_name, script_args.dataset_config, training_args)
    splits = split_training_dataset(dataset, script_args)
    model, processor, peft_config = load_model_for_training(model_args, training_args, script_args.use_kernels)
    trainer = SARRTrainer(
        model,
        training_args,
        train_dataset=splits.train,
        eval_dataset=splits.validation,
        processing_class=processor,
        peft_config=peft_config,
        split_record=splits.record(),
    )
    evaluation = StageEvaluation(
        processor,
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
    if training_args.push_to_hub:  # every process takes part; the main one uploads
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    state.destroy_process_group()
    return results


@dataclass(frozen=True)
class TrainingMethod:
    """A method's argument dataclasses (what ``parse_recipe_args`` parses) and the function that runs it."""

    argument_types: tuple[type, type, type]
    run: Callable[..., Any]


TRAINING_METHODS: dict[str, TrainingMethod] = {
    "mtct": TrainingMethod((MTCTScriptArguments, MTCTConfig, ModelConfig), run_mtct),
    "sarr": TrainingMethod((SARRScriptArguments, SARRConfig, ModelConfig), run_sarr),
}
