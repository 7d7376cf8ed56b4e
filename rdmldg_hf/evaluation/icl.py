"""In-context learning (the second seed, arXiv 2402.06599): k solved demos in the prompt.

Demos are images with their answer (the class name for the direct modes, the image's
chain for ``reasoning``), drawn from a pool of labelled rows:

==================  ===========================================================================
strategy            demos of a test image
==================  ===========================================================================
``random``          k rows of the training domains, uniformly
``balanced``        one row per class (classes in a seeded order) until k; round robin if k > classes
``same_domain``     k rows of the test image's own domain (analysis only: it uses labelled
                    target-domain images; the test image itself is never its own demo)
``other_domain``    k rows of training domains other than the test image's domain
==================  ===========================================================================

Draws are seeded per test image (``seed`` and its ``image_id``), so they do not depend on
batching, order or which other images are evaluated.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Sequence

from datasets import Dataset

from ..data.training_rows import has_chain
from .predict import Demo, task_of

__all__ = ["STRATEGIES", "ICLSettings", "select_demos", "build_demos"]

STRATEGIES: tuple[str, ...] = ("random", "balanced", "same_domain", "other_domain")


@dataclass(frozen=True)
class ICLSettings:
    """How many demos, how they are chosen, and the seed of the draws."""

    shots: int = 4
    strategy: str = "random"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shots < 1:
            raise ValueError(f"--icl-shots must be at least 1; got {self.shots}.")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"Unknown demo strategy {self.strategy!r}. Valid strategies: {', '.join(STRATEGIES)}.")


def _candidates(
    strategy: str,
    domain: str,
    image_id: str,
    train_domains: set[str],
    by_domain: dict[str, list[int]],
    ids: Sequence[str],
) -> list[int]:
    if strategy == "same_domain":
        pool = by_domain.get(domain, [])
    elif strategy == "other_domain":
        pool = [i for d in sorted(train_domains) if d != domain for i in by_domain.get(d, [])]
    else:
        pool = [i for d in sorted(train_domains) for i in by_domain.get(d, [])]
    return [i for i in pool if ids[i] != image_id]


def _balanced(rng: random.Random, pool: list[int], labels: Sequence[int], shots: int) -> list[int]:
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in pool:
        by_class[labels[i]].append(i)
    classes = sorted(by_class)
    rng.shuffle(classes)
    for members in by_class.values():
        rng.shuffle(members)
    picked: list[int] = []
    depth = 0
    while len(picked) < shots:
        for label in classes:
            if depth < len(by_class[label]) and len(picked) < shots:
                picked.append(by_class[label][depth])
        depth += 1
    return picked


def select_demos(
    pool: Dataset,
    test_domains: Sequence[str],
    test_image_ids: Sequence[str],
    train_domains: Sequence[str],
    settings: ICLSettings,
    mode: str = "direct",
) -> list[list[int]]:
    """Row indices into ``pool`` of each test image's demos.

    Args:
        pool: labelled rows (``label``, ``domain``, ``image_id``; ``reasoning`` for the reasoning mode).
        test_domains, test_image_ids: the domain and id of each test image.
        train_domains: the domains ``random``, ``balanced`` and ``other_domain`` draw from.
        settings: shots, strategy, seed.
        mode: the prediction mode (``reasoning`` demos need a chain; rows without one are skipped).

    Raises:
        ValueError: when a test image has fewer usable demos than ``settings.shots`` (says how many).
    """
    if len(test_domains) != len(test_image_ids):
        raise ValueError(f"{len(test_domains)} domains for {len(test_image_ids)} image ids.")
    needs_chain = task_of(mode) == "reasoning"
    labels, domains, ids = pool["label"], pool["domain"], pool["image_id"]
    chains = pool["reasoning"] if needs_chain and "reasoning" in pool.column_names else None
    if needs_chain and chains is None:
        raise ValueError(
            "Reasoning demos need chains, but the demo pool has no 'reasoning' column; use a direct mode."
        )
    by_domain: dict[str, list[int]] = defaultdict(list)
    for i, domain in enumerate(domains):
        if chains is None or has_chain(chains[i]):
            by_domain[domain].append(i)
    train = set(train_domains)
    picked: list[list[int]] = []
    for domain, image_id in zip(test_domains, test_image_ids):
        pool_rows = _candidates(settings.strategy, domain, image_id, train, by_domain, ids)
        if len(pool_rows) < settings.shots:
            source = (
                f"domain {domain!r}"
                if settings.strategy == "same_domain"
                else f"domains {', '.join(sorted(train)) or '(none)'}"
            )
            raise ValueError(
                f"--icl-shots {settings.shots} is larger than the {len(pool_rows)} demos available for image "
                f"{image_id!r} (strategy {settings.strategy!r}, from {source}"
                f"{', rows with a chain only' if needs_chain else ''}). Use at most {len(pool_rows)} shots."
            )
        rng = random.Random(f"{settings.seed}:{image_id}")
        if settings.strategy == "balanced":
            picked.append(_balanced(rng, pool_rows, labels, settings.shots))
        else:
            picked.append(rng.sample(pool_rows, settings.shots))
    return picked


def build_demos(
    pool: Dataset, indices: Sequence[Sequence[int]], class_names: Sequence[str], mode: str
) -> list[list[Demo]]:
    """The :class:`~rdmldg_hf.evaluation.predict.Demo` lists of :func:`select_demos`' indices.

    Images are read lazily per row (``pool`` may keep them undecoded).
    """
    reasoning = task_of(mode) == "reasoning"
    needed = sorted({i for row in indices for i in row})
    rows: dict[int, dict[str, Any]] = {i: pool[i] for i in needed}
    return [
        [Demo(rows[i]["image"], rows[i]["reasoning"] if reasoning else class_names[rows[i]["label"]]) for i in row]
        for row in indices
    ]
