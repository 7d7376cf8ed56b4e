# Copyright the rdmldg_hf authors. Apache-2.0.
"""MTCT fine-tuning of a vision-language model on a DomainBed-Reasoning benchmark.

    # the embedded default on a laptop CPU (builds the dataset and a tiny model on first use)
    accelerate launch recipes/mtct.py --config recipes/configs/mtct_tiny.yaml

    # the paper's set-up (InternVL3-8B, LoRA r=8 on vision and language, lr 5e-4, 3 epochs)
    accelerate launch recipes/mtct.py --config recipes/configs/mtct_internvl3_8b.yaml --test_domain art

Every MTCTConfig / SFTConfig / TrainingArguments field and TRL's ModelConfig fields can be
given in the YAML or on the command line (the command line wins); a YAML field that none of
them reads is an error naming it and the file.
"""

from __future__ import annotations

from dataclasses import dataclass

from trl import ModelConfig

from rdmldg_hf.recipe_setup import (
    RecipeScriptArguments,
    use_cpu_cores,
    load_model_for_training,
    load_training_dataset,
    parse_recipe_args,
    prepare_embedded_inputs,
)
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer


@dataclass
class MTCTScriptArguments(RecipeScriptArguments):
    """Arguments of this recipe beside MTCTConfig and ModelConfig."""


DEFAULT_TINY_MODEL = "outputs/tiny-llava"


def main(script_args: MTCTScriptArguments, training_args: MTCTConfig, model_args: ModelConfig) -> None:
    if model_args.model_name_or_path is None:  # no model given: the embedded default's tiny model
        model_args.model_name_or_path = DEFAULT_TINY_MODEL
        script_args.tiny_model = script_args.tiny_model or "llava"
    prepare_embedded_inputs(
        script_args.dataset_name, script_args.dataset_config, model_args.model_name_or_path, script_args.tiny_model
    )
    dataset = load_training_dataset(script_args.dataset_name, script_args.dataset_config, training_args)
    model, processor, peft_config = load_model_for_training(model_args, training_args)

    trainer = MTCTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.accelerator.print(trainer.mtct_data.stats.summary())
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_state()  # trainer_state.json (the loss log for `rdmldg analyze losses`) whatever save_strategy says
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Saved to {training_args.output_dir} (with rdmldg_config.json).")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()


def parse_args(argv: list[str] | None = None) -> tuple[MTCTScriptArguments, MTCTConfig, ModelConfig]:
    """The recipe's arguments from ``argv`` (default: the command line) and its ``--config`` YAML."""
    return parse_recipe_args((MTCTScriptArguments, MTCTConfig, ModelConfig), argv)


if __name__ == "__main__":
    script_args, training_args, model_args = parse_args()
    use_cpu_cores(script_args.cpu_threads)
    main(script_args, training_args, model_args)
