"""A benchmark dataset as it loads (one split per domain): its rows in one ``Dataset``, and its benchmark."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..benchmarks import BENCHMARKS, Benchmark, display_name, get_benchmark

if TYPE_CHECKING:
    from datasets import Dataset, DatasetDict

__all__ = ["merge_domains", "match_benchmark", "find_benchmark"]


def merge_domains(dataset: Dataset | DatasetDict) -> Dataset:
    """One ``Dataset`` of every domain split (a ``Dataset`` is returned as is).

    Raises:
        TypeError: naming the type, for anything but a ``Dataset`` or ``DatasetDict``.
    """
    from datasets import Dataset, DatasetDict, concatenate_datasets

    if isinstance(dataset, DatasetDict):
        return concatenate_datasets([dataset[split] for split in dataset])
    if not isinstance(dataset, Dataset):
        raise TypeError(f"Expected a datasets.Dataset or DatasetDict, got {type(dataset).__name__}.")
    return dataset


def _label_feature(dataset: Dataset | DatasetDict):
    from datasets import DatasetDict

    first = next(iter(dataset.values())) if isinstance(dataset, DatasetDict) else dataset
    return first.features.get("label")


def match_benchmark(dataset: Dataset | DatasetDict) -> Benchmark | None:
    """The registry benchmark whose classes are the dataset's ``label`` classes (a ``ClassLabel``), else None."""
    from datasets import ClassLabel

    feature = _label_feature(dataset)
    if isinstance(feature, ClassLabel):
        for benchmark in BENCHMARKS.values():
            if list(benchmark.classes) == list(feature.names):
                return benchmark
    return None


def find_benchmark(dataset: Dataset | DatasetDict, name: str | None = None) -> Benchmark:
    """The benchmark named ``name``, or else the one whose classes are the dataset's ``label`` classes.

    Raises:
        ValueError: when the label classes match no benchmark and no ``name`` is given, or when the
            dataset's ``ClassLabel`` names other classes than the named benchmark's.
    """
    from datasets import ClassLabel

    feature = _label_feature(dataset)
    if name is not None:
        named = get_benchmark(name)
        if isinstance(feature, ClassLabel) and [display_name(n) for n in feature.names] != list(named.class_names):
            raise ValueError(
                f"Benchmark {named.name!r} was named, but the dataset's label classes ({', '.join(feature.names[:4])}"
                f"{', ...' if len(feature.names) > 4 else ''}) are not its classes. Name the dataset's own benchmark, "
                "or leave it unset: it is found from the label classes."
            )
        return named
    found = match_benchmark(dataset)
    if found is None:
        raise ValueError(
            f"The dataset's label classes match no benchmark ({', '.join(BENCHMARKS)}); its label feature is "
            f"{feature!r}. Name the benchmark: `rdmldg eval --benchmark officehome`, benchmark='officehome' in "
            "Python or the recipes' YAML."
        )
    return found
