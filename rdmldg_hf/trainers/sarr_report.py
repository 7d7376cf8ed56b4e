"""What a SARR run reports: its run record, the results summary (per stage) and its model card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from huggingface_hub import ModelCard

from ..cards import build_model_card, stage_accuracies
from ..models import RUN_CONFIG_NAME, RunConfig, build_run_record
from ..prompts import PROMPT_VERSION
from .sarr_state import StageResult

if TYPE_CHECKING:
    from .sarr import SARRTrainer

__all__ = ["results_summary", "run_record", "sarr_model_card"]

# The stage table's columns: the round's acceptance, then the stage evaluation's accuracies.
_COLUMNS = ("acceptance", "heldout_direct", "heldout_reasoning", "source_holdout_direct")


def results_summary(
    trainer: "SARRTrainer", stages: Sequence[StageResult], wall_seconds: float | None = None
) -> dict[str, Any]:
    """Per stage: relabel figures, losses and metrics; the final metrics; where the time went."""
    rows = [{"stage": r.name, "relabel": r.relabel, "losses": r.losses, "metrics": r.metrics} for r in stages]
    return {
        "method": "sarr",
        "benchmark": trainer.benchmark.name,
        "test_domain": trainer.split_record.get("test_domain"),
        "chance": 1 / trainer.benchmark.num_classes,
        "base_model": trainer.base_name,
        "adapter": trainer.is_adapter,
        "prompt_version": PROMPT_VERSION,
        "images": {
            "train": len(trainer.train_dataset),
            "source_holdout": len(trainer.eval_dataset) if trainer.eval_dataset is not None else 0,
        },
        "stages": rows,
        "final": rows[-1]["metrics"] if rows else {},
        "timing": {
            "wall_seconds": wall_seconds,
            "relabel_seconds": sum((r.relabel or {}).get("seconds", 0.0) for r in stages),
            "training_seconds": sum(r.losses.get("train_runtime", 0.0) for r in stages),
            "evaluation_seconds": sum(r.metrics.get("eval_seconds", 0.0) for r in stages),
        },
    }


def run_record(trainer: "SARRTrainer", method: str = "sarr", base_model: str | None = None) -> RunConfig:
    """The run record of a SARR run (what ``rdmldg_config.json`` holds and its model card describes): the last
    stage's MTCT settings (from its saved record), then the SARR settings and each round's relabel figures."""
    stages = trainer.stage_results
    final = Path(stages[-1].model_dir) if stages and stages[-1].model_dir else None
    stage_run = RunConfig.load(final) if final is not None and (final / RUN_CONFIG_NAME).is_file() else None
    args = trainer.args
    return build_run_record(
        method,
        trainer.benchmark,
        domains=trainer.train_dataset["domain"],
        base_model=base_model or trainer.base_name,
        adapter=trainer.is_adapter,
        split_record=trainer.split_record,
        settings={
            **(stage_run.settings if stage_run is not None else {}),
            "num_rounds": args.num_rounds,
            "mtct_stage": args.mtct_stage,
            "fallback": args.fallback,
            "round_init": args.round_init,
            "relabel": args.relabel_settings().to_dict(),
            "rounds": [stage.relabel for stage in stages if stage.relabel],
        },
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _stage_table(stages: Sequence[StageResult]) -> list[str]:
    lines = [
        "| stage | acceptance | held-out direct | held-out reasoning | source-holdout direct |",
        "|---|---|---|---|---|",
    ]
    for stage in stages:
        cells = [(stage.relabel or {}).get(key) if key == "acceptance" else stage.metrics.get(key) for key in _COLUMNS]
        lines.append(f"| {stage.name} | " + " | ".join(_pct(c) for c in cells) + " |")
    return lines


def sarr_model_card(
    trainer: "SARRTrainer",
    model_name: str,
    hub_model_id: str,
    dataset_name: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """The project's model card (:func:`rdmldg_hf.cards.build_model_card`, TRL's card underneath) of a SARR run.

    The card names the trainer ``SARR`` and the paper (arXiv 2602.23777), carries the trainer's tags, a
    ``model-index`` of the final stage's accuracies (in percent, as every card of the project) and a table of
    every stage's acceptance and accuracies.
    """
    stages = trainer.stage_results
    test_domain = trainer.split_record.get("test_domain")
    held_out = f", holding out domain `{test_domain}`" if test_domain else ""
    summary = [
        "### RD-MLDG stages",
        "",
        f"MTCT, then {trainer.args.num_rounds} SARR rounds of self-relabeling on {trainer.benchmark.title}{held_out}; "
        f"{'a LoRA adapter' if trainer.is_adapter else 'full weights'}. Rejected self-chains: "
        f"`{trainer.args.fallback}`; rounds start from: `{trainer.args.round_init}`; prompt version "
        f"`{PROMPT_VERSION}` (see `rdmldg_config.json`).",
        "",
        *_stage_table(stages),
        "",
        "Each round's training rows are a config `<benchmark>-sarr-r<k>` of the round dataset "
        "(loadable with `datasets.load_dataset`).",
    ]
    return build_model_card(
        run_record(trainer),
        hub_model_id,
        model_name=model_name,
        dataset=dataset_name,
        accuracies=stage_accuracies(stages[-1].metrics if stages else {}, test_domain),
        tags=[*trainer._tag_names, *tags],
        sections=["\n".join(summary)],
        secrets=[trainer.args.hub_token or ""],
    )
