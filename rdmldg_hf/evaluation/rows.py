"""Scoring a model on dataset rows (prediction, the metric, unreadable images) and benchmark checks.

The splits themselves (holdout, leave-one-domain-out, subsets) live in :mod:`rdmldg_hf.protocol`.
Accuracies come from the package's ``evaluate`` metric (:mod:`rdmldg_hf.evaluation.dg_metric`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from datasets import Dataset, Image

from ..benchmarks import Benchmark, get_benchmark
from ..prompts import PROMPT_VERSION
from .dg_metric import compute_dg_metrics
from .icl import ICLSettings, build_demos, select_demos
from .predict import Predictions, check_mode, predict

__all__ = [
    "NO_LABEL",
    "EvalOutcome",
    "undecoded",
    "split_unlabeled",
    "check_same_benchmark",
    "score_predictions",
    "evaluate_rows",
]


def undecoded(dataset: Dataset) -> Dataset:
    """The dataset with its ``image`` column left encoded, so that unreadable files are counted, not fatal."""
    if "image" in dataset.column_names and getattr(dataset.features["image"], "decode", False):
        return dataset.cast_column("image", Image(decode=False))
    return dataset


NO_LABEL = -1  # a ClassLabel's missing value: the image's class is unknown


def _unlabeled(labels: Sequence[Any]) -> list[int]:
    return [i for i, label in enumerate(labels) if label is None or int(label) == NO_LABEL]


def split_unlabeled(rows: Dataset, benchmark: Benchmark) -> tuple[Dataset, dict[str, int]]:
    """The rows with a class, and how many rows per domain have none (label -1), left out of scoring.

    Raises:
        ValueError: naming the labels that are neither -1 nor one of the benchmark's classes.
    """
    labels = rows["label"]
    unknown = sorted(
        {int(label) for label in labels if label is not None} - set(range(NO_LABEL, benchmark.num_classes))
    )
    if unknown:
        raise ValueError(
            f"Labels {unknown[:10]} are not classes of benchmark {benchmark.name!r} (0..{benchmark.num_classes - 1}; "
            f"-1 means no label). Check --benchmark, or fix the dataset's label column."
        )
    missing = _unlabeled(labels)
    if not missing:
        return rows, {}
    domains = rows["domain"]
    left_out = set(missing)
    counts = dict(Counter(domains[i] for i in missing))
    return rows.select([i for i in range(len(rows)) if i not in left_out]), counts


def check_same_benchmark(trained_on: str | None, dataset_benchmark: Benchmark, what: str = "The adapter") -> None:
    """Refuse to evaluate a model trained on one benchmark on another's data.

    Raises:
        ValueError: naming both benchmarks.
    """
    if trained_on is not None and get_benchmark(trained_on).name != dataset_benchmark.name:
        raise ValueError(
            f"{what} was trained on benchmark {trained_on!r} but the dataset is {dataset_benchmark.name!r}; "
            f"its classes and answers do not carry over. Evaluate it on a {trained_on!r} config."
        )


def score_predictions(
    predictions: Predictions, rows: Dataset, unlabeled: Mapping[str, int] | None = None
) -> dict[str, Any]:
    """The ``evaluate`` metric of predictions on rows, plus unreadable images per domain.

    Rows without a class (label -1) are left out of the accuracy and counted per domain in
    ``unlabeled_per_domain``, with ``unlabeled`` (images already left out, see :func:`split_unlabeled`).
    Images whose API request failed (``predictions.failed``) have no answer: they are left out of
    every accuracy and counted in ``failed`` / ``failed_per_domain``.

    Raises:
        ValueError: when no image is left to score (every label is -1, or every request failed).
    """
    domains, labels = list(rows["domain"]), list(rows["label"])
    left_out = set(_unlabeled(labels))
    if left_out and len(left_out) == len(rows):
        raise ValueError(f"No image to score: all {len(rows)} have label -1 (no class).")
    scored = [i for i in range(len(predictions.indices)) if i not in predictions.failed and i not in left_out]
    if not scored:
        raise ValueError(
            f"All {len(predictions.indices)} requests failed after all their retries (e.g. "
            f"{next(iter(predictions.failed.values()), '')}); nothing to score. Check the server, then rerun: "
            "the replies are kept in the store, so only the missing requests are sent."
        )
    metrics = compute_dg_metrics(
        [predictions.indices[i] for i in scored], [labels[i] for i in scored], [domains[i] for i in scored]
    )
    metrics["unreadable_per_domain"] = dict(Counter(domains[i] for i in predictions.unreadable))
    metrics["unreadable"] = len(predictions.unreadable)
    counts = Counter(unlabeled or {})
    counts.update(domains[i] for i in left_out)
    metrics["unlabeled_per_domain"] = dict(sorted(counts.items()))
    metrics["unlabeled"] = sum(counts.values())
    if predictions.failed:
        metrics["failed_per_domain"] = dict(Counter(domains[i] for i in predictions.failed))
        metrics["failed"] = len(predictions.failed)
        metrics["first_failure"] = next(iter(predictions.failed.values()))
    return metrics


@dataclass
class EvalOutcome:
    """Metrics and predictions of one evaluation."""

    metrics: dict[str, Any]
    predictions: Predictions
    seconds: float
    settings: dict[str, Any] = field(default_factory=dict)

    def record(self, **extra: Any) -> dict[str, Any]:
        """A JSON-serialisable record (what ``results.json`` holds)."""
        return {
            **extra,
            **self.settings,
            "prompt_version": PROMPT_VERSION,
            "metrics": self.metrics,
            "seconds": round(self.seconds, 2),
        }


def evaluate_rows(
    model: Any,
    processor: Any,
    rows: Dataset,
    benchmark: Benchmark,
    mode: str = "direct",
    *,
    batch_size: int = 16,
    max_new_tokens: int | None = None,
    icl: ICLSettings | None = None,
    demo_pool: Dataset | None = None,
    train_domains: Sequence[str] = (),
    unlabeled: Mapping[str, int] | None = None,
) -> EvalOutcome:
    """Predict every row in ``mode`` (optionally with in-context demos from ``demo_pool``) and score it.

    ``rows`` need ``image``, ``label``, ``domain`` (and ``image_id`` with ``icl``); rows with label -1 are
    predicted but not scored (see :func:`score_predictions`, which also reports ``unlabeled``).
    """
    check_mode(mode)
    start = time.perf_counter()
    rows = undecoded(rows)
    demos = None
    settings: dict[str, Any] = {"mode": mode, "icl": None}
    if icl is not None:
        if demo_pool is None:
            raise ValueError("In-context evaluation needs a demo pool (the training domains' rows).")
        demo_pool = undecoded(demo_pool)
        indices = select_demos(demo_pool, rows["domain"], rows["image_id"], train_domains, icl, mode)
        demos = build_demos(demo_pool, indices, benchmark.class_names, mode)
        settings["icl"] = {
            "shots": icl.shots,
            "strategy": icl.strategy,
            "seed": icl.seed,
            "train_domains": list(train_domains),
        }
    predictions = predict(
        model,
        processor,
        rows["image"],
        benchmark.class_names,
        mode,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        aliases=benchmark.class_aliases,
        demos=demos,
    )
    metrics = score_predictions(predictions, rows, unlabeled)
    return EvalOutcome(metrics, predictions, time.perf_counter() - start, settings)
