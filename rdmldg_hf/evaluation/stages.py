"""Accuracy after each training stage of a run, the run's ``results.json`` and its summary table.

:class:`StageEvaluation` is a SARR ``stage_callback``: after each stage it scores direct answers
(class-name likelihood) on the held-out domain and on the source domains' holdout, and reasoning
answers (a generated chain, its conclusion parsed) on the held-out domain; the final stage's
per-image predictions are kept for ``predictions.jsonl``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from datasets import Dataset

from ..atomic import atomic_write_json
from ..benchmarks import Benchmark
from .predict import PREDICTIONS_NAME, write_predictions
from .rows import evaluate_rows

__all__ = ["REASONING_EVALUATIONS", "StageEvaluation", "summary_table", "write_run_results"]

REASONING_EVALUATIONS: tuple[str, ...] = ("final", "every_stage", "never")


class StageEvaluation:
    """``fn(stage, model) -> metrics`` after each stage: ``heldout_direct``, ``source_holdout_direct`` and (per
    ``reasoning``: the ``final`` stage, ``every_stage`` or ``never``) ``heldout_reasoning`` with its invalid rate."""

    def __init__(
        self,
        processor: Any,
        benchmark: Benchmark,
        test: Dataset | None,
        validation: Dataset | None,
        final_stage: str,
        *,
        batch_size: int = 64,
        max_new_tokens: int = 256,
        reasoning: str = "final",
    ):
        if reasoning not in REASONING_EVALUATIONS:
            raise ValueError(f"Unknown eval_reasoning {reasoning!r}. Valid: {', '.join(REASONING_EVALUATIONS)}.")
        self.processor, self.benchmark, self.final_stage = processor, benchmark, final_stage
        self.parts = {"heldout": test, "source_holdout": validation}
        self.batch_size, self.max_new_tokens, self.reasoning = batch_size, max_new_tokens, reasoning
        self.predictions: list[dict[str, Any]] = []  # the last stage's per-image predictions (predictions.jsonl)

    def _score(self, model: Any, part: str, mode: str) -> dict[str, Any] | None:
        rows = self.parts[part]
        if rows is None or len(rows) == 0:
            return None
        outcome = evaluate_rows(
            model,
            self.processor,
            rows,
            self.benchmark,
            mode,
            batch_size=self.batch_size,
            max_new_tokens=self.max_new_tokens,
        )
        columns = (rows[column] for column in ("image_id", "domain", "label"))
        self.predictions += [{"part": part, **record} for record in outcome.predictions.records(*columns)]
        return outcome.metrics

    def __call__(self, stage: str, model: Any) -> dict[str, float | None]:
        start = time.time()
        self.predictions = []
        metrics: dict[str, float | None] = {}
        for part in self.parts:
            scores = self._score(model, part, "direct")
            metrics[f"{part}_direct"] = scores["accuracy"] if scores else None
        final = stage == self.final_stage
        if self.reasoning == "every_stage" or (self.reasoning == "final" and final):
            scores = self._score(model, "heldout", "reasoning")
            if scores is not None:
                metrics["heldout_reasoning"], metrics["heldout_reasoning_invalid"] = (
                    scores["accuracy"],
                    scores["invalid_rate"],
                )
        metrics["eval_seconds"] = round(time.time() - start, 2)
        return metrics


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _table(rows: Sequence[Sequence[Any]]) -> list[str]:
    """Rows as left-aligned columns, a rule under the first one."""
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    text = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in rows]
    text.insert(1, "  ".join("-" * width for width in widths))
    return text


def summary_table(results: Mapping[str, Any]) -> str:
    """One table of a run's ``results.json``: per stage, acceptance of the round and accuracy (held-out domain,
    source holdout), and where the time went."""
    rows: list[Sequence[Any]] = [
        (
            "stage",
            "accepted",
            "bad format",
            "fallback",
            "heldout direct",
            "heldout reasoning",
            "source-holdout direct",
            "relabel s",
            "train s",
        )
    ]
    for stage in results["stages"]:
        relabel, metrics = stage.get("relabel") or {}, stage["metrics"]
        rows.append(
            (
                stage["stage"],
                _percent(relabel.get("acceptance")),
                _percent(relabel.get("invalid_format_rate")),
                ",".join(f"{k}:{v}" for k, v in (relabel.get("fallbacks") or {}).items()) or "-",
                _percent(metrics.get("heldout_direct")),
                _percent(metrics.get("heldout_reasoning")),
                _percent(metrics.get("source_holdout_direct")),
                f"{relabel['seconds']:.0f}" if relabel else "-",
                f"{stage['losses'].get('train_runtime', 0):.0f}",
            )
        )
    timing = results["timing"]
    footer = (
        f"test domain {results['test_domain']} (chance {100 * results['chance']:.0f}%); wall "
        f"{timing['wall_seconds']:.0f} s: relabel {timing['relabel_seconds']:.0f} s, training "
        f"{timing['training_seconds']:.0f} s, evaluation {timing['evaluation_seconds']:.0f} s"
    )
    return "\n".join([*_table(rows), footer])


def write_run_results(out: str | Path, results: dict[str, Any], predictions: Sequence[Mapping[str, Any]]) -> None:
    """Write ``results.json`` and ``predictions.jsonl`` into ``out``.

    A rerun that found every stage done (the same stages as the file's) keeps the file's timing, and writes no
    predictions (it computed none): the earlier ``predictions.jsonl`` stays.
    """
    out = Path(out)
    path = out / "results.json"
    earlier = json.loads(path.read_text()) if path.exists() else None
    if earlier and earlier.get("stages") == results["stages"]:
        results["timing"] = earlier["timing"]
    atomic_write_json(path, results)
    if predictions:
        write_predictions(out / PREDICTIONS_NAME, predictions)
