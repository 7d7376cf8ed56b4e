# Copyright the rdmldg_hf authors. Apache-2.0.
"""RD-MLDG's whole method: MTCT on teacher chains, then SARR rounds of self-relabeling.

    # no arguments: the embedded default (the packaged sarr_tiny.yaml: RotatedDigits, a tiny model) on a CPU
    accelerate launch recipes/sarr.py

    # the paper's set-up (InternVL3-8B, LoRA r=8 on vision and language, N=3 rounds)
    accelerate launch recipes/sarr.py --config recipes/configs/sarr_internvl3_8b.yaml --test_domain art

The dataset is split once, before training: ``test_domain`` is held out (and scored after each
stage) and each training domain's in/out holdout (``holdout_fraction``) is the source holdout.
Every script argument, SARRConfig / MTCTConfig / SFTConfig field and TRL's ModelConfig field can
be given in the YAML or on the command line (the command line wins); a YAML field that none of
them reads is an error naming it and the file. Killed? Run the same command again: finished
stages are skipped and training resumes from the last checkpoint. The output folder receives the
final adapter (or model), ``rdmldg_config.json``, a model card, ``results.json`` (accuracy per
stage on the held-out domain and on the source holdout, acceptance per round, timings),
``predictions.jsonl`` (the final model's prediction for every image scored) and ``dataset/`` with
each round's rows in the Hub layout. ``rdmldg train sarr`` launches the same.
"""

from __future__ import annotations

from trl import ModelConfig

from rdmldg_hf.trainers import SARRConfig
from rdmldg_hf.training import SARRScriptArguments, parse_method_args, run_recipe, run_sarr


def main(script_args: SARRScriptArguments, training_args: SARRConfig, model_args: ModelConfig) -> None:
    run_sarr(script_args, training_args, model_args)


def parse_args(argv: list[str] | None = None) -> tuple[SARRScriptArguments, SARRConfig, ModelConfig]:
    """The recipe's arguments from ``argv`` (default: the command line; none: the packaged sarr_tiny.yaml) and its
    ``--config`` YAML."""
    return parse_method_args("sarr", argv)


if __name__ == "__main__":
    run_recipe("sarr")
