"""Domain-generalization accuracy: accuracy per domain, the mean over domains, invalid-output rate.

An ``evaluate`` metric module shipped inside rdmldg_hf; it loads offline::

    import evaluate
    from rdmldg_hf.evaluation.dg_metric import metric_path
    metric = evaluate.load(metric_path())
    metric.compute(predictions=[3, -1, 2], references=[3, 1, 1], domains=["art", "art", "photo"])

A prediction of ``-1`` is an invalid output (no class could be read from it): it counts
as wrong and in the invalid-output rate. This file imports nothing from rdmldg_hf, since
``evaluate`` copies it into its modules cache.
"""

from __future__ import annotations

from collections import defaultdict

import datasets
import evaluate

_DESCRIPTION = """Accuracy per domain (each held-out domain of a leave-one-domain-out protocol), the
unweighted mean over domains (DomainBed's "Avg" column), accuracy over all rows, and the rate
of invalid outputs (prediction -1, scored as wrong), overall and per domain."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of int): predicted class indices; -1 marks an invalid output.
    references (list of int): true class indices.
    domains (list of str): the domain of each row.
Returns:
    accuracy (float): over all rows.
    mean_accuracy (float): unweighted mean of the per-domain accuracies.
    per_domain (dict): domain -> accuracy.
    invalid_rate (float): share of rows with an invalid output.
    invalid_per_domain (dict): domain -> invalid-output rate.
    count_per_domain (dict): domain -> rows.
Example:
    >>> metric.compute(predictions=[1, -1], references=[1, 0], domains=["a", "b"])["mean_accuracy"]
    0.5
"""

_CITATION = """@inproceedings{gulrajani2021search, title={In Search of Lost Domain Generalization},
author={Gulrajani, Ishaan and Lopez-Paz, David}, booktitle={ICLR}, year={2021}}"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class DGAccuracy(evaluate.Metric):
    """Accuracy per domain, mean over domains and invalid-output rate."""

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Value("int64"),
                    "references": datasets.Value("int64"),
                    "domains": datasets.Value("string"),
                }
            ),
        )

    def _compute(self, predictions, references, domains):
        if not predictions:
            raise ValueError("No rows to score: give at least one prediction.")
        correct: dict[str, int] = defaultdict(int)
        invalid: dict[str, int] = defaultdict(int)
        count: dict[str, int] = defaultdict(int)
        for prediction, reference, domain in zip(predictions, references, domains):
            count[domain] += 1
            invalid[domain] += int(prediction < 0)
            correct[domain] += int(prediction >= 0 and prediction == reference)
        order = sorted(count)
        per_domain = {d: correct[d] / count[d] for d in order}
        return {
            "accuracy": sum(correct.values()) / len(predictions),
            "mean_accuracy": sum(per_domain.values()) / len(per_domain),
            "per_domain": per_domain,
            "invalid_rate": sum(invalid.values()) / len(predictions),
            "invalid_per_domain": {d: invalid[d] / count[d] for d in order},
            "count_per_domain": {d: count[d] for d in order},
        }
