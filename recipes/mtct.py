# Copyright the rdmldg_hf authors. Apache-2.0.
"""MTCT fine-tuning of a vision-language model on a DomainBed-Reasoning benchmark.

    # no arguments: the embedded default (the packaged mtct_tiny.yaml) on a laptop CPU; builds the dataset
    # and a tiny model on first use
    accelerate launch recipes/mtct.py

    # the paper's set-up (InternVL3-8B, LoRA r=8 on vision and language, lr 5e-4, 3 epochs)
    accelerate launch recipes/mtct.py --config recipes/configs/mtct_internvl3_8b.yaml --test_domain art

The dataset is split once, before training: ``test_domain`` is held out and each training
domain's in/out holdout (``holdout_fraction``) becomes the evaluation set. Every script argument,
MTCTConfig / SFTConfig / TrainingArguments field and TRL's ModelConfig field can be given in the
YAML or on the command line (the command line wins); a YAML field that none of them reads is an
error naming it and the file. ``rdmldg train mtct`` launches the same.
"""

from __future__ import annotations

from trl import ModelConfig

from rdmldg_hf.trainers import MTCTConfig
from rdmldg_hf.training import MTCTScriptArguments, parse_method_args, run_mtct, run_recipe


def main(script_args: MTCTScriptArguments, training_args: MTCTConfig, model_args: ModelConfig) -> None:
    run_mtct(script_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple[MTCTScriptArguments, MTCTConfig, ModelConfig]:
    """The recipe's arguments from ``argv`` (default: the command line; none: the packaged mtct_tiny.yaml) and its
    ``--config`` YAML."""
    return parse_method_args("mtct", argv)


if __name__ == "__main__":
    run_recipe("mtct")
