# Copyright the rdmldg_hf authors. Apache-2.0.
"""RD-MLDG's whole method: MTCT on teacher chains, then SARR rounds of self-relabeling.

    # no arguments: the embedded default (RotatedDigits, a tiny model) on a CPU in minutes
    accelerate launch recipes/sarr.py

    # the paper's set-up (InternVL3-8B, LoRA r=8 on vision and language, N=3 rounds)
    accelerate launch recipes/sarr.py --config recipes/configs/sarr_internvl3_8b.yaml --test_domain art

Every SARRConfig / MTCTConfig / SFTConfig field and TRL's ModelConfig fields can be given in
the YAML or on the command line (the command line wins); a YAML field that none of them reads is
an error naming it and the file. Killed? Run the same command again:
finished stages are skipped and training resumes from the last checkpoint. The output folder
receives the final adapter (or model), ``rdmldg_config.json``, a model card, ``results.json``
(accuracy per stage on the held-out domain and on the source domains' holdout, acceptance per
round, timings), ``predictions.jsonl`` (the final model's prediction for every image scored)
and ``dataset/`` with each round's rows in the Hub layout.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from trl import ModelConfig

from rdmldg_hf.generation import GenerationSettings, process_state
from rdmldg_hf.recipe_setup import (
    RecipeScriptArguments,
    use_cpu_cores,
    load_model_for_training,
    load_training_dataset,
    parse_recipe_args,
    prepare_embedded_inputs,
)
from rdmldg_hf.evaluation.predict import PREDICTIONS_NAME, prediction_records, write_predictions
from rdmldg_hf.evaluation.dg_metric import compute_dg_metrics
from rdmldg_hf.evaluation.predict import predict
from rdmldg_hf.trainers.sarr import SARRConfig, SARRTrainer

DEFAULT_CONFIG = Path(__file__).parent / "configs" / "sarr_tiny.yaml"


@dataclass
class SARRScriptArguments(RecipeScriptArguments):
    """Arguments of this recipe beside SARRConfig and ModelConfig: the tiny default model and evaluation."""

    tiny_vocab_size: int = field(default=1536, metadata={"help": "Vocabulary of a tiny model built here."})
    tiny_text_hidden: int | None = field(default=None, metadata={"help": "Hidden size of a tiny model's language model."})
    tiny_text_layers: int | None = field(default=None, metadata={"help": "Layers of a tiny model's language model."})
    tiny_vision_hidden: int | None = field(default=None, metadata={"help": "Hidden size of a tiny model's vision tower."})
    tiny_phrase_tokens: bool = field(
        default=True, metadata={"help": "Tiny model tokenizer merges across spaces (shorter chains, faster on CPU)."}
    )
    eval_batch_size: int = field(default=64, metadata={"help": "Images per batch when scoring and generating for evaluation."})
    eval_reasoning: str = field(
        default="final",
        metadata={
            "help": "When to measure reasoning-mode accuracy on the held-out domain (generate a chain, parse its "
            "conclusion): 'final', 'every_stage' or 'never'. Direct-answer accuracy is measured after every stage.",
            "choices": ["final", "every_stage", "never"],
        },
    )


def prepare_inputs(script_args: SARRScriptArguments, model_args: ModelConfig) -> None:
    """Build the embedded dataset and the tiny model when asked for and missing."""
    prepare_embedded_inputs(
        script_args.dataset_name,
        script_args.dataset_config,
        model_args.model_name_or_path,
        script_args.tiny_model,
        vocab_size=script_args.tiny_vocab_size,
        phrase_tokens=script_args.tiny_phrase_tokens,
        text_hidden=script_args.tiny_text_hidden,
        text_layers=script_args.tiny_text_layers,
        vision_hidden=script_args.tiny_vision_hidden,
    )


class StageEvaluation:
    """Accuracy after each stage: direct answers (class-name likelihood) on the held-out domain and
    the source domains' holdout; reasoning answers (generated chain -> conclusion) on the held-out domain."""

    def __init__(self, trainer: SARRTrainer, script_args: SARRScriptArguments):
        self.trainer, self.args = trainer, script_args
        self.names = list(trainer.benchmark.class_names)
        self.settings = GenerationSettings(
            batch_size=script_args.eval_batch_size, max_new_tokens=trainer.args.relabel_max_new_tokens
        )
        self.predictions: list[dict] = []  # the last stage's per-image predictions (predictions.jsonl)

    def _keep(self, part: str, rows, mode: str, indices, probabilities=None, texts=None) -> None:
        columns = (rows[c] for c in ("image_id", "domain", "label"))
        records = prediction_records(mode, *columns, indices, probabilities, texts)
        self.predictions += [{"part": part, **record} for record in records]

    def _direct(self, model: torch.nn.Module, rows, part: str) -> float | None:
        if rows is None or len(rows) == 0:
            return None
        result = predict(model, self.trainer.processor, rows["image"], self.names,
                         batch_size=self.args.eval_batch_size)
        self._keep(part, rows, "direct", result.indices, result.probabilities)
        return compute_dg_metrics(result.indices, rows["label"], rows["domain"])["accuracy"]

    def __call__(self, stage: str, model: torch.nn.Module) -> dict[str, float | None]:
        start = time.time()
        test = self.trainer.test_rows
        self.predictions = []
        metrics: dict[str, float | None] = {
            "heldout_direct": self._direct(model, test, "heldout"),
            "source_holdout_direct": self._direct(model, self.trainer.val_rows, "source_holdout"),
        }
        final = stage == self.trainer.stages[-1]
        wanted = self.args.eval_reasoning == "every_stage" or (self.args.eval_reasoning == "final" and final)
        if wanted and test is not None and len(test):
            result = predict(
                model, self.trainer.processor, test["image"], self.names, "reasoning",
                aliases=self.trainer.benchmark.class_aliases, generation=self.settings,
            )
            scores = compute_dg_metrics(result.indices, test["label"], test["domain"])
            metrics["heldout_reasoning"], metrics["heldout_reasoning_invalid"] = scores["accuracy"], scores["invalid_rate"]
            self._keep("heldout", test, "reasoning", result.indices, texts=result.texts)
        metrics["eval_seconds"] = round(time.time() - start, 2)
        return metrics


def summary_table(results: dict) -> str:
    """One table: per stage, accuracy (held-out, source holdout) and the round's acceptance."""
    header = ("stage", "accepted", "bad format", "fallback", "heldout direct", "heldout reasoning", "source-holdout direct", "relabel s", "train s")
    lines = [header]
    for stage in results["stages"]:
        relabel, metrics = stage.get("relabel") or {}, stage["metrics"]

        def pct(value):
            return "-" if value is None else f"{100 * value:.1f}%"

        lines.append(
            (
                stage["stage"],
                pct(relabel.get("acceptance")),
                pct(relabel.get("invalid_format_rate")),
                ",".join(f"{k}:{v}" for k, v in (relabel.get("fallbacks") or {}).items()) or "-",
                pct(metrics.get("heldout_direct")),
                pct(metrics.get("heldout_reasoning")),
                pct(metrics.get("source_holdout_direct")),
                f"{relabel['seconds']:.0f}" if relabel else "-",
                f"{stage['losses'].get('train_runtime', 0):.0f}",
            )
        )
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(header))]
    text = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)) for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    timing = results["timing"]
    text.append(
        f"test domain {results['test_domain']} (chance {100 * results['chance']:.0f}%); wall {timing['wall_seconds']:.0f} s: "
        f"relabel {timing['relabel_seconds']:.0f} s, training {timing['training_seconds']:.0f} s, "
        f"evaluation {timing['evaluation_seconds']:.0f} s"
    )
    return "\n".join(text)


def main(script_args: SARRScriptArguments, training_args: SARRConfig, model_args: ModelConfig) -> None:
    started = time.time()
    prepare_inputs(script_args, model_args)
    dataset = load_training_dataset(script_args.dataset_name, script_args.dataset_config, training_args)
    model, processor, peft_config = load_model_for_training(model_args, training_args)

    trainer = SARRTrainer(model, training_args, dataset, processor, peft_config=peft_config)
    evaluation = StageEvaluation(trainer, script_args)
    trainer.stage_callback = evaluation
    stages = trainer.train()
    out = trainer.save_model()
    results = trainer.results_summary(stages, wall_seconds=time.time() - started)
    state = process_state()
    if state.is_main_process:
        earlier = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
        if earlier and earlier.get("stages") == results["stages"]:  # a rerun that redid nothing
            results["timing"] = earlier["timing"]
        (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
        trainer.create_model_card(results, dataset_name=script_args.dataset_name).save(out / "README.md")
        if evaluation.predictions:  # empty when a rerun found every stage done: the earlier file stays
            write_predictions(out / PREDICTIONS_NAME, evaluation.predictions)
        print(summary_table(results))
        print(
            f"Saved to {out}: results.json, {PREDICTIONS_NAME} (the final model's per-image predictions), "
            "rdmldg_config.json, README.md (model card), dataset/ (round configs)."
        )
    state.destroy_process_group()


def parse_args(argv: list[str] | None = None) -> tuple[SARRScriptArguments, SARRConfig, ModelConfig]:
    """The recipe's arguments from ``argv`` (default: the command line, or the embedded default's config
    when it is empty) and its ``--config`` YAML."""
    argv = sys.argv[1:] if argv is None else argv
    return parse_recipe_args((SARRScriptArguments, SARRConfig, ModelConfig), argv or ["--config", str(DEFAULT_CONFIG)])


if __name__ == "__main__":
    script_args, training_args, model_args = parse_args()
    use_cpu_cores(script_args.cpu_threads)
    main(script_args, training_args, model_args)
