"""Every environment's in and out parts, as DomainBed evaluates them (``env{i}_in`` / ``env{i}_out``).

Environments are in DomainBed's order: the benchmark's domain folders, sorted (a dataset of no known
benchmark: its domains, sorted). Every domain is split whole by the holdout (:mod:`.holdout`); the
test environments (none, one or several) are left out of training. For a training environment the
in part is what the model trains on and the out part its validation (training-domain model
selection); for a test environment the in part is the test set and the out part the validation set
of the oracle (test-domain validation). With ``max_train_images_per_domain`` the training
environments' parts are the stratified samples :func:`.lodo.lodo_split` trains and validates on;
with one test domain the training and validation rows are exactly those of :func:`.lodo.lodo_split`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .domains import match_benchmark, merge_domains
from .holdout import DEFAULT_HOLDOUT_FRACTION, DEFAULT_HOLDOUT_SEED, DEFAULT_HOLDOUT_STYLE, split_holdout
from .lodo import training_parts
from .subsets import DEFAULT_SAMPLE_SEED

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

__all__ = ["EnvironmentSplit", "dataset_environments", "check_test_envs", "environment_split"]


def dataset_environments(dataset: Dataset | DatasetDict) -> list[str]:
    """DomainBed's environments of a dataset: its benchmark's domains (sorted folders), else its domains sorted.

    Raises:
        ValueError: when the dataset lacks some of its benchmark's domains (DomainBed numbers every one),
            naming them.
    """
    rows_domains = list(dataset) if isinstance(dataset, dict) else sorted(set(merge_domains(dataset)["domain"]))
    benchmark = match_benchmark(dataset)
    if benchmark is None:
        return sorted(rows_domains)
    missing = [d for d in benchmark.domains if d not in rows_domains]
    if missing:
        raise ValueError(
            f"The dataset lacks the {benchmark.name} domain(s) {', '.join(missing)}; environments are numbered "
            f"over every domain ({', '.join(benchmark.domains)}). Build the dataset with every domain folder."
        )
    return list(benchmark.domains)


def check_test_envs(requested: Sequence[Any], environments: Sequence[str]) -> list[int]:
    """Test environments given as indices (DomainBed's) or domain names, as sorted indices.

    Raises:
        ValueError: naming the unknown environment and listing the valid ones.
    """
    valid = ", ".join(f"{i} ({name})" for i, name in enumerate(environments))
    indices = []
    for value in requested:
        text = str(value).strip()
        if text.lstrip("-").isdigit() and 0 <= int(text) < len(environments):
            indices.append(int(text))
        elif text.lower() in environments:
            indices.append(list(environments).index(text.lower()))
        else:
            raise ValueError(f"Unknown test environment {value!r}. Valid environments: {valid}.")
    return sorted(set(indices))


@dataclass
class EnvironmentSplit:
    """The in and out parts of every environment, and which environments are held out (see the module docstring)."""

    environments: list[str]
    test_envs: list[int]
    train: Dataset
    validation: Dataset
    test_in: Dataset
    test_out: Dataset
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    holdout_seed: int = DEFAULT_HOLDOUT_SEED
    holdout_style: str = DEFAULT_HOLDOUT_STYLE
    max_train_images_per_domain: int | None = None
    sample_seed: int = DEFAULT_SAMPLE_SEED

    @property
    def test_domains(self) -> list[str]:
        return [self.environments[i] for i in self.test_envs]

    def record(self) -> dict[str, Any]:
        """How the rows were split (JSON-serialisable, as :meth:`.lodo.LodoSplit.record`; ``test_domain`` is the
        test domain of a single one)."""
        return {
            "test_domain": self.test_domains[0] if len(self.test_envs) == 1 else None,
            "test_domains": self.test_domains,
            "test_envs": list(self.test_envs),
            "holdout_fraction": self.holdout_fraction,
            "holdout_seed": self.holdout_seed,
            "holdout_style": self.holdout_style,
            "test_split": "in",
            "max_train_images_per_domain": self.max_train_images_per_domain,
            "sample_seed": self.sample_seed,
        }

    def parts(self) -> list[tuple[int, str, Dataset]]:
        """``(environment index, "in" | "out", rows)`` for every environment, in order."""
        out = []
        for index, domain in enumerate(self.environments):
            held_out = index in self.test_envs
            for part, rows in (
                ("in", self.test_in if held_out else self.train),
                ("out", self.test_out if held_out else self.validation),
            ):
                out.append((index, part, rows.filter(lambda d, domain=domain: d == domain, input_columns="domain")))
        return out


def environment_split(
    dataset: Dataset | DatasetDict,
    test_envs: Sequence[int],
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    holdout_seed: int = DEFAULT_HOLDOUT_SEED,
    *,
    holdout_style: str = DEFAULT_HOLDOUT_STYLE,
    max_train_images_per_domain: int | None = None,
    sample_seed: int = DEFAULT_SAMPLE_SEED,
) -> EnvironmentSplit:
    """Split every environment into in and out parts and hold out ``test_envs`` (indices in DomainBed's order).

    Raises:
        ValueError: for an index outside the environments, or no training image left.
    """
    environments = dataset_environments(dataset)
    test_envs = check_test_envs(test_envs, environments)
    held_out = {environments[i] for i in test_envs}
    rows = merge_domains(dataset)
    in_part, out_part = split_holdout(rows, holdout_fraction, holdout_seed, holdout_style)
    train, validation = training_parts(
        in_part, out_part, held_out, holdout_fraction, max_train_images_per_domain, sample_seed
    )
    return EnvironmentSplit(
        environments,
        test_envs,
        train,
        validation,
        in_part.filter(lambda d: d in held_out, input_columns="domain"),
        out_part.filter(lambda d: d in held_out, input_columns="domain"),
        holdout_fraction,
        holdout_seed,
        holdout_style,
        max_train_images_per_domain,
        sample_seed,
    )
