"""Leave-one-domain-out protocol: splits, checks, and scoring a model on domains.

For a held-out domain ``d``: the training rows are the in-part of every other domain, the
validation rows their out-part (the foundation's deterministic holdout,
:func:`rdmldg_hf.data.holdout.split_holdout`, used for training-domain model selection),
and the test rows the whole of ``d``. Accuracies come from the package's ``evaluate``
metric (:mod:`rdmldg_hf.evaluation.dg_metric`).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

from datasets import ClassLabel, Dataset, DatasetDict, Image, concatenate_datasets

from ..benchmarks import BENCHMARKS, Benchmark, get_benchmark, normalize_name
from ..data.holdout import DEFAULT_HOLDOUT_FRACTION, DEFAULT_HOLDOUT_SEED, split_holdout
from ..prompts import PROMPT_VERSION
from .dg_metric import compute_dg_metrics
from .icl import ICLSettings, build_demos, select_demos
from .predict import Predictions, check_mode, predict

__all__ = [
    "LodoSplit",
    "EvalOutcome",
    "find_benchmark",
    "merge_domains",
    "undecoded",
    "check_domains",
    "check_same_benchmark",
    "lodo_split",
    "score_predictions",
    "evaluate_rows",
]


def find_benchmark(dataset: Dataset | DatasetDict, name: str | None = None) -> Benchmark:
    """The registry benchmark whose classes are the dataset's ``label`` classes (or ``name``).

    Raises:
        ValueError: when the label classes match no benchmark (and no ``name`` is given).
    """
    if name is not None:
        return get_benchmark(name)
    first = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    feature = first.features.get("label")
    if isinstance(feature, ClassLabel):
        for benchmark in BENCHMARKS.values():
            if list(benchmark.classes) == list(feature.names):
                return benchmark
    raise ValueError(
        f"The dataset's label classes match no benchmark ({', '.join(BENCHMARKS)}); its label feature is {feature!r}."
    )


def merge_domains(dataset: Dataset | DatasetDict) -> Dataset:
    """One ``Dataset`` of every domain split (a ``Dataset`` is returned as is)."""
    if isinstance(dataset, DatasetDict):
        return concatenate_datasets([dataset[split] for split in dataset])
    return dataset


def undecoded(dataset: Dataset) -> Dataset:
    """The dataset with its ``image`` column left encoded, so that unreadable files are counted, not fatal."""
    if "image" in dataset.column_names and getattr(dataset.features["image"], "decode", False):
        return dataset.cast_column("image", Image(decode=False))
    return dataset


def check_domains(requested: Sequence[str] | None, available: Sequence[str], config: str = "") -> list[str]:
    """Normalised requested domains (all when None), each checked against ``available``.

    Raises:
        ValueError: naming the unknown domain and listing those of the config.
    """
    if not requested:
        return list(available)
    out = []
    for domain in requested:
        key = normalize_name(domain)
        if key not in available:
            where = f" config {config!r}" if config else " dataset"
            raise ValueError(f"Domain {domain!r} is not in the{where}. Its domains: {', '.join(available)}.")
        out.append(key)
    return out


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


@dataclass
class LodoSplit:
    """The rows of one held-out domain: train (in-part), validation (out-part), test (whole domain)."""

    test_domain: str
    train_domains: list[str]
    train: Dataset
    validation: Dataset
    test: Dataset


def lodo_split(
    dataset: Dataset | DatasetDict,
    test_domain: str,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    holdout_seed: int = DEFAULT_HOLDOUT_SEED,
    max_train_images_per_domain: int | None = None,
) -> LodoSplit:
    """Split a benchmark for held-out ``test_domain`` (see the module docstring).

    ``max_train_images_per_domain`` keeps only the first N images of each training domain
    (for small CPU runs); the test domain is always whole.
    """
    if isinstance(dataset, DatasetDict):
        parts = {domain: dataset[domain] for domain in dataset}
    else:
        parts = {d: dataset.filter(lambda x, d=d: x == d, input_columns="domain") for d in sorted(set(dataset["domain"]))}
    domains = list(parts)
    test = check_domains([test_domain], domains)[0]
    others = [parts[d] for d in domains if d != test]
    if max_train_images_per_domain:
        others = [part.select(range(min(max_train_images_per_domain, len(part)))) for part in others]
    train, validation = split_holdout(concatenate_datasets(others), holdout_fraction, holdout_seed)
    return LodoSplit(test, [d for d in domains if d != test], train, validation, parts[test])


def score_predictions(predictions: Predictions, rows: Dataset) -> dict[str, Any]:
    """The ``evaluate`` metric of predictions on rows, plus unreadable images per domain."""
    metrics = compute_dg_metrics(predictions.indices, rows["label"], rows["domain"])
    domains = rows["domain"]
    metrics["unreadable_per_domain"] = dict(Counter(domains[i] for i in predictions.unreadable))
    metrics["unreadable"] = len(predictions.unreadable)
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
        return {**extra, **self.settings, "prompt_version": PROMPT_VERSION, "metrics": self.metrics, "seconds": round(self.seconds, 2)}


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
) -> EvalOutcome:
    """Predict every row in ``mode`` (optionally with in-context demos from ``demo_pool``) and score it.

    ``rows`` need ``image``, ``label``, ``domain`` (and ``image_id`` with ``icl``).
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
        settings["icl"] = {"shots": icl.shots, "strategy": icl.strategy, "seed": icl.seed, "train_domains": list(train_domains)}
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
    return EvalOutcome(score_predictions(predictions, rows), predictions, time.perf_counter() - start, settings)
