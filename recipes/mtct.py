# Copyright the rdmldg_hf authors. Apache-2.0.
"""MTCT fine-tuning of a vision-language model on a DomainBed-Reasoning benchmark.

    # the embedded default on a laptop CPU (builds the dataset and a tiny model on first use)
    accelerate launch recipes/mtct.py --config recipes/configs/mtct_tiny.yaml

    # the paper's set-up (InternVL3-8B, LoRA r=8 on vision and language, lr 5e-4, 3 epochs)
    accelerate launch recipes/mtct.py --config recipes/configs/mtct_internvl3_8b.yaml --test_domain art

Every MTCTConfig / SFTConfig / TrainingArguments field and TRL's ModelConfig fields can be
given in the YAML or on the command line (the command line wins).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from accelerate import PartialState
from datasets import load_dataset
from trl import ModelConfig, TrlParser

from rdmldg_hf.benchmarks import BENCHMARKS, EMBEDDED_BENCHMARK
from rdmldg_hf.models import ARCHITECTURES, build_tiny_model, default_lora_config, load_model_and_processor
from rdmldg_hf.trainers import MTCTConfig, MTCTTrainer


@dataclass
class MTCTScriptArguments:
    dataset_name: str = field(
        default="outputs/domainbed-reasoning",
        metadata={"help": "Dataset folder or Hub id of DomainBed-Reasoning (e.g. rdmldg/domainbed-reasoning)."},
    )
    dataset_config: str = field(
        default=EMBEDDED_BENCHMARK, metadata={"help": "Config to load: a benchmark ('officehome'); splits are domains."}
    )
    tiny_model: str | None = field(
        default=None,
        metadata={
            "help": "Build a tiny random model of this architecture at model_name_or_path when that folder does "
            "not exist (for CPU runs of the embedded benchmark).",
            "choices": list(ARCHITECTURES),
        },
    )


def prepare_inputs(script_args: MTCTScriptArguments, model_args: ModelConfig) -> None:
    """Build the embedded dataset and the tiny model when asked for and missing (main process first)."""
    with PartialState().main_process_first():
        folder = Path(script_args.dataset_name)
        if script_args.dataset_config == EMBEDDED_BENCHMARK and not (folder / EMBEDDED_BENCHMARK).exists():
            from rdmldg_hf.data.build import build_dataset

            if PartialState().is_main_process:
                print(build_dataset(EMBEDDED_BENCHMARK, folder).format())
        model_dir = Path(model_args.model_name_or_path)
        if script_args.tiny_model and not (model_dir / "config.json").exists() and PartialState().is_main_process:
            build_tiny_model(model_dir, script_args.tiny_model)


DEFAULT_TINY_MODEL = "outputs/tiny-llava"


def main(script_args: MTCTScriptArguments, training_args: MTCTConfig, model_args: ModelConfig) -> None:
    if model_args.model_name_or_path is None:  # no model given: the embedded default's tiny model
        model_args.model_name_or_path = DEFAULT_TINY_MODEL
        script_args.tiny_model = script_args.tiny_model or "llava"
    prepare_inputs(script_args, model_args)
    dataset = load_dataset(script_args.dataset_name, script_args.dataset_config)
    if training_args.benchmark is None and script_args.dataset_config in BENCHMARKS:
        training_args.benchmark = script_args.dataset_config

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

    trainer = MTCTTrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        processing_class=processor,
        peft_config=peft_config,
    )
    trainer.accelerator.print(trainer.mtct_data.stats.summary())
    trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)
    trainer.save_model(training_args.output_dir)
    trainer.accelerator.print(f"Saved to {training_args.output_dir} (with rdmldg_config.json).")
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.dataset_name)
    trainer.accelerator.end_training()


if __name__ == "__main__":
    parser = TrlParser((MTCTScriptArguments, MTCTConfig, ModelConfig))
    main(*parser.parse_args_and_config())
