"""The package's ``evaluate`` metric (``metric/metric.py``): where it is, and loading it offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["metric_path", "load_metric", "compute_dg_metrics"]


def metric_path() -> str:
    """Path of the metric module; ``evaluate.load(metric_path())`` works without network."""
    return str(Path(__file__).with_name("metric") / "metric.py")


def load_metric(**kwargs: Any):
    """``evaluate.load`` of the package's domain-generalization accuracy metric."""
    import evaluate

    return evaluate.load(metric_path(), **kwargs)


def compute_dg_metrics(
    predictions: Sequence[int], references: Sequence[int], domains: Sequence[str]
) -> dict[str, Any]:
    """Accuracy per domain, mean over domains and invalid-output rate, via the ``evaluate`` metric."""
    return load_metric().compute(
        predictions=[int(p) for p in predictions], references=[int(r) for r in references], domains=list(domains)
    )
