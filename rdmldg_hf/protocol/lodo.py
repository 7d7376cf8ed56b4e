"""Leave-one-domain-out splits: train on the other domains' in-part, select on their out-part, test on the rest.

For a held-out domain ``d``: the holdout (:mod:`.holdout`) splits every domain whole; the
training rows are the in-part of the other domains, the validation rows their out-part
(training-domain model selection), and the test rows the whole of ``d`` (``test_split="whole"``,
the default) or its in-part (``test_split="in"``, what DomainBed reports). Without a held-out
domain every domain is trained on and the test rows are empty. Subsets
(``max_train_images_per_domain``) are stratified samples drawn after that split (:mod:`.subsets`),
so an image is on the same side of the holdout whatever the subset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from ..benchmarks import normalize_name
from .choices import check_choice
from .domains import merge_domains
from .holdout import DEFAULT_HOLDOUT_FRACTION, DEFAULT_HOLDOUT_SEED, DEFAULT_HOLDOUT_STYLE, split_holdout
from .subsets import DEFAULT_SAMPLE_SEED, stratified_sample

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

__all__ = [
    "TEST_SPLITS",
    "LodoSplit",
    "check_domains",
    "check_test_split",
    "lodo_split",
    "training_parts",
    "validation_size",
]

TEST_SPLITS: tuple[str, ...] = ("whole", "in")


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


def check_test_split(test_split: str) -> str:
    """The test split, if valid.

    Raises:
        ValueError: naming the value and the valid ones.
    """
    return check_choice(test_split, TEST_SPLITS, "test_split", "(DomainBed reports 'in'.)")


def validation_size(train_images: int, holdout_fraction: float) -> int:
    """Validation images per domain that go with ``train_images`` training images (the holdout's share)."""
    return max(1, round(train_images * holdout_fraction / (1 - holdout_fraction))) if holdout_fraction > 0 else 0


def training_parts(
    in_part: Dataset,
    out_part: Dataset,
    held_out: set[str | None],
    holdout_fraction: float,
    max_train_images_per_domain: int | None,
    sample_seed: int,
) -> tuple[Dataset, Dataset]:
    """The training (in) and validation (out) rows of every domain not ``held_out``, stratified samples of
    ``max_train_images_per_domain`` (and its :func:`validation_size`) when set.

    Raises:
        ValueError: when no training image is left.
    """
    train = in_part.filter(lambda d: d not in held_out, input_columns="domain")
    validation = out_part.filter(lambda d: d not in held_out, input_columns="domain")
    if len(train) == 0:
        named = ", ".join(repr(d) for d in sorted(held_out, key=str))
        raise ValueError(f"No training images left after holding out {named} and the validation part.")
    if max_train_images_per_domain:
        train = stratified_sample(train, max_train_images_per_domain, sample_seed)
        size = validation_size(max_train_images_per_domain, holdout_fraction)
        validation = stratified_sample(validation, size, sample_seed) if size and len(validation) else validation
    return train, validation


@dataclass
class LodoSplit:
    """The rows of one held-out domain: train (in-part), validation (out-part), test (whole domain or in-part),
    and the settings that made them (:meth:`record`)."""

    test_domain: str | None
    train_domains: list[str]
    train: Dataset
    validation: Dataset
    test: Dataset
    test_split: str = "whole"
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION
    holdout_seed: int = DEFAULT_HOLDOUT_SEED
    holdout_style: str = DEFAULT_HOLDOUT_STYLE
    max_train_images_per_domain: int | None = None
    sample_seed: int = DEFAULT_SAMPLE_SEED

    def record(self) -> dict[str, Any]:
        """How the rows were split (JSON-serialisable): what a trained model's ``rdmldg_config.json`` records,
        so that analyses and evaluation find the same training and validation images again."""
        keys = (
            "test_domain",
            "holdout_fraction",
            "holdout_seed",
            "holdout_style",
            "test_split",
            "max_train_images_per_domain",
            "sample_seed",
        )
        return {key: getattr(self, key) for key in keys}


def lodo_split(
    dataset: Dataset | DatasetDict,
    test_domain: str | None,
    holdout_fraction: float = DEFAULT_HOLDOUT_FRACTION,
    holdout_seed: int = DEFAULT_HOLDOUT_SEED,
    max_train_images_per_domain: int | None = None,
    *,
    holdout_style: str = DEFAULT_HOLDOUT_STYLE,
    test_split: str = "whole",
    sample_seed: int = DEFAULT_SAMPLE_SEED,
) -> LodoSplit:
    """Split a benchmark for held-out ``test_domain`` (see the module docstring); None holds out no domain.

    ``max_train_images_per_domain`` keeps a stratified sample of that many in-part images per
    training domain and of :func:`validation_size` out-part images (for small CPU runs).

    Raises:
        ValueError: for an unknown ``test_domain`` (listing the dataset's domains), an unknown ``test_split``
            or holdout style, or no training image left.
    """
    check_test_split(test_split)
    rows = merge_domains(dataset)
    domains = list(dataset) if isinstance(dataset, dict) else sorted(set(rows["domain"]))
    test = check_domains([test_domain], domains)[0] if test_domain is not None else None
    in_part, out_part = split_holdout(rows, holdout_fraction, holdout_seed, holdout_style)
    train, validation = training_parts(
        in_part, out_part, {test}, holdout_fraction, max_train_images_per_domain, sample_seed
    )
    test_rows = in_part if test_split == "in" else rows
    test_rows = test_rows.filter(lambda d: d == test, input_columns="domain")
    return LodoSplit(
        test,
        [d for d in domains if d != test],
        train,
        validation,
        test_rows,
        test_split,
        holdout_fraction,
        holdout_seed,
        holdout_style,
        max_train_images_per_domain,
        sample_seed,
    )
