"""The deterministic in/out holdout of DomainBed's protocol, shared by every consumer.

Within each domain, ``int(n * fraction)`` images go to the "out" part (validation for
training-domain model selection), as in DomainBed. Which ones depends only on the seed
and each image's ``image_id`` (the images whose seeded hash is smallest), so training,
SARR, evaluation and analyses all validate on the same images, whatever order or subset
of the other rows they hold.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from typing import Iterable

from datasets import Dataset

__all__ = ["DEFAULT_HOLDOUT_FRACTION", "DEFAULT_HOLDOUT_SEED", "holdout_ids", "split_holdout"]

DEFAULT_HOLDOUT_FRACTION = 0.2
DEFAULT_HOLDOUT_SEED = 0


def _score(image_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).digest()


def _check_fraction(fraction: float) -> None:
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"holdout fraction must be in [0, 1); got {fraction!r}.")


def holdout_ids(
    image_ids: Iterable[str],
    domains: Iterable[str],
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
) -> set[str]:
    """The image ids of the "out" part: per domain, the ``int(n * fraction)`` lowest seeded hashes."""
    _check_fraction(fraction)
    by_domain: dict[str, list[str]] = defaultdict(list)
    for image_id, domain in zip(image_ids, domains):
        by_domain[domain].append(image_id)
    out: set[str] = set()
    for ids in by_domain.values():
        ranked = sorted(set(ids), key=lambda image_id: _score(image_id, seed))
        out.update(ranked[: int(len(ranked) * fraction)])
    return out


def split_holdout(
    dataset: Dataset,
    fraction: float = DEFAULT_HOLDOUT_FRACTION,
    seed: int = DEFAULT_HOLDOUT_SEED,
) -> tuple[Dataset, Dataset]:
    """Split rows (with ``image_id`` and ``domain`` columns) into (in, out) parts, order kept."""
    for column in ("image_id", "domain"):
        if column not in dataset.column_names:
            raise ValueError(
                f"split_holdout needs an {column!r} column; the dataset has {dataset.column_names}."
            )
    out_ids = holdout_ids(dataset["image_id"], dataset["domain"], fraction, seed)
    is_out = [image_id in out_ids for image_id in dataset["image_id"]]
    in_part = dataset.select([i for i, flag in enumerate(is_out) if not flag])
    out_part = dataset.select([i for i, flag in enumerate(is_out) if flag])
    return in_part, out_part
