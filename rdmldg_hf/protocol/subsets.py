"""Seeded samples stratified by class (and domain): what every subset option draws.

Real DomainBed folders are written class by class, so the first N rows of a domain hold a
few classes only. :func:`stratified_sample` keeps, in every domain, N images whose classes
follow the domain's class proportions: the N places are handed out one at a time, each to the
class that deserves it most (Sainte-Lague's divisor method; equal claims go to the larger class,
then in a seeded order of the labels), so a class's quota only grows with N. Within a class the
images with the smallest seeded hash of ``image_id`` are kept. Hence a sample does not depend
on row order, and a smaller sample is part of a larger one with the same seed.
Draw samples after the in/out holdout of whole domains, so that an image is on the same
side of the holdout whatever the sample.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from typing import TYPE_CHECKING, Any, Mapping

if TYPE_CHECKING:
    from datasets import Dataset

__all__ = ["DEFAULT_SAMPLE_SEED", "class_quotas", "stratified_sample", "sample_record", "describe_rows"]

DEFAULT_SAMPLE_SEED = 0


def _rank(image_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"sample:{seed}:{image_id}".encode()).digest()


def class_quotas(counts: Mapping[Any, int], size: int, seed: int = DEFAULT_SAMPLE_SEED) -> dict[Any, int]:
    """Images per class in a sample of ``size`` out of ``counts``, proportional to the counts.

    Places are handed out one at a time, each to the class with the largest ``count / (2 * quota + 1)``
    (Sainte-Lague's divisor method: the quotas of size N + 1 are those of size N plus one place), never
    more than a class holds. Equal claims go to the larger class, then by a seeded hash of the label,
    never by the order of ``counts``.
    """
    total = sum(counts.values())
    if size >= total:
        return dict(counts)
    quotas = {key: 0 for key in counts}
    # (-claim, -count, seeded rank, class): the smallest entry is the largest claim, then the larger class.
    claims = [(-count, -count, _rank(repr(key), seed), key) for key, count in counts.items() if count > 0]
    heapq.heapify(claims)
    for _ in range(size):
        _, minus_count, rank, key = heapq.heappop(claims)
        quotas[key] += 1
        if quotas[key] < -minus_count:
            heapq.heappush(claims, (minus_count / (2 * quotas[key] + 1), minus_count, rank, key))
    return quotas


def stratified_sample(dataset: Dataset, per_domain: int, seed: int = DEFAULT_SAMPLE_SEED) -> Dataset:
    """At most ``per_domain`` rows of every domain, stratified by ``label`` (rows in their original order).

    Raises:
        ValueError: for a size below 1, or rows without ``image_id``, ``domain`` or ``label``.
    """
    if per_domain < 1:
        raise ValueError(f"A sample needs at least 1 image per domain; got {per_domain}.")
    missing = [c for c in ("image_id", "domain", "label") if c not in dataset.column_names]
    if missing:
        raise ValueError(f"A stratified sample needs the columns {missing}; the dataset has {dataset.column_names}.")
    groups: dict[str, dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for position, (domain, label) in enumerate(zip(dataset["domain"], dataset["label"])):
        groups[domain][label].append(position)
    ids = dataset["image_id"]
    keep: list[int] = []
    for by_class in groups.values():
        quotas = class_quotas({label: len(rows) for label, rows in by_class.items()}, per_domain, seed)
        for label, rows in by_class.items():
            keep += sorted(rows, key=lambda position: _rank(ids[position], seed))[: quotas[label]]
    return dataset.select(sorted(keep))


def sample_record(
    sizes: Mapping[str, int], available: Mapping[str, int], seed: int, part: str = "whole domain"
) -> dict[str, Any]:
    """What a results file says about the rows scored: the part of the domain, and the sample's size and seed if any.

    ``sizes``: images scored per domain; ``available``: images of that part per domain.
    """
    record: dict[str, Any] = {"part": part, "images_per_domain": dict(sizes)}
    if dict(sizes) != dict(available):
        record.update(sample="stratified by class", seed=seed, of_images_per_domain=dict(available))
    return record


def describe_rows(record: Mapping[str, Any]) -> str:
    """One line for tables: ``whole domain``, or ``stratified sample of 128 of 450 images (seed 0) of ...``."""
    if "sample" not in record:
        return str(record["part"])
    scored, available = sum(record["images_per_domain"].values()), sum(record["of_images_per_domain"].values())
    return f"stratified sample of {scored} of {available} images (seed {record['seed']}) of the {record['part']}"
