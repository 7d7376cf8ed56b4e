"""What a SARR run reports: the results summary (per stage) and its model card, made by TRL's card machinery."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Sequence

from huggingface_hub import EvalResult, ModelCard

from ..models import accuracy_result
from ..prompts import PROMPT_VERSION
from .sarr_state import StageResult

if TYPE_CHECKING:
    from .sarr import SARRTrainer

__all__ = ["results_summary", "sarr_model_card"]

# Stage metrics (as the recipes' stage evaluation names them) that go to the card's model-index.
_CARD_METRICS = (
    ("heldout_direct", "held-out domain, direct answer"),
    ("heldout_reasoning", "held-out domain, reasoning answer"),
    ("source_holdout_direct", "source domains' holdout, direct answer"),
)


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


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _stage_table(stages: Sequence[StageResult]) -> list[str]:
    lines = [
        "| stage | acceptance | held-out direct | held-out reasoning | source-holdout direct |",
        "|---|---|---|---|---|",
    ]
    for stage in stages:
        cells = [(stage.relabel or {}).get("acceptance")] + [stage.metrics.get(key) for key, _ in _CARD_METRICS]
        lines.append(f"| {stage.name} | " + " | ".join(_pct(c) for c in cells) + " |")
    return lines


def _eval_results(trainer: "SARRTrainer", final: dict[str, Any], dataset_name: str | None) -> list[EvalResult]:
    test_domain = trainer.split_record.get("test_domain")
    results = []
    for key, what in _CARD_METRICS:
        split = "source-holdout" if key.startswith("source") else test_domain
        if final.get(key) is not None and split:
            results.append(
                accuracy_result(
                    final[key],
                    task_type="image-classification",
                    dataset_type=dataset_name or "rdmldg/domainbed-reasoning",
                    dataset_name=f"{trainer.benchmark.title} ({what})",
                    dataset_config=trainer.benchmark.name,
                    dataset_split=split,
                    metric_name=f"accuracy ({what})",
                )
            )
    return results


def sarr_model_card(
    trainer: "SARRTrainer",
    model_name: str,
    hub_model_id: str,
    dataset_name: str | None = None,
    tags: Sequence[str] = (),
) -> ModelCard:
    """TRL's model card (``trl.trainer.utils.generate_model_card``) of a SARR run, with its stages appended.

    The card names the trainer ``SARR`` and the paper (arXiv 2602.23777), carries the trainer's tags, a
    ``model-index`` of the final stage's accuracies (in percent, as every card of the project) and a table of
    every stage's acceptance and accuracies.
    """
    from trl.trainer.utils import generate_model_card

    base = trainer.base_name if trainer.base_name and not os.path.isdir(trainer.base_name) else None
    paper = trainer._paper
    card = generate_model_card(
        base_model=base,
        model_name=model_name,
        hub_model_id=hub_model_id,
        dataset_name=dataset_name,
        tags=sorted({*trainer._tag_names, *tags}),
        wandb_url=None,
        trackio_url=None,
        trainer_name=trainer._name,
        trainer_citation=paper.get("citation"),
        paper_title=paper.get("title"),
        paper_id=paper.get("id"),
    )
    stages = trainer.stage_results
    card.data.library_name = "peft" if trainer.is_adapter else "transformers"
    card.data.pipeline_tag = "image-text-to-text"
    card.data.eval_results = _eval_results(trainer, stages[-1].metrics if stages else {}, dataset_name) or None
    test_domain = trainer.split_record.get("test_domain")
    held_out = f", holding out domain `{test_domain}`" if test_domain else ""
    summary = [
        "## RD-MLDG stages",
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
        "",
    ]
    marker = "### Framework versions"
    card.text = card.text.replace(marker, "\n".join(summary) + "\n" + marker, 1)
    return card
