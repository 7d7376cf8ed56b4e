"""Example images for the demo: a few per domain, of different classes, from the model's benchmark.

The embedded benchmark's images are made on the spot (no download); any other benchmark's come from the
dataset the model card names (``datasets.load_dataset``, streamed, a few rows per domain). When they
cannot be had, the demo runs without examples and says why.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..benchmarks import get_benchmark
from .facts import ModelFacts

__all__ = ["Example", "write_examples"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    """An example image written to disk: its file, domain and class label."""

    path: Path
    domain: str
    label: str

    @property
    def caption(self) -> str:
        return f"{self.domain}: {self.label}"


def _embedded_rows() -> Iterable[tuple[str, int, bytes]]:
    from ..embedded.benchmark import embedded_source_images

    return ((image.domain, image.label, image.read_bytes()) for image in embedded_source_images())


def _dataset_rows(dataset: str, benchmark: str, domains: Iterable[str], limit: int) -> Iterable[tuple[str, int, Any]]:
    from datasets import load_dataset

    for domain in domains:
        rows = load_dataset(dataset, benchmark, split=domain, streaming=True)
        for row in rows.take(limit):
            yield domain, int(row["label"]), row["image"]


def _encoded(image: Any) -> bytes:
    """PNG bytes of a PIL image; encoded bytes as they are."""
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    if isinstance(image, dict) and image.get("bytes") is not None:
        return image["bytes"]
    import io

    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def write_examples(facts: ModelFacts, out: str | os.PathLike, per_domain: int = 2, scan: int = 64) -> list[Example]:
    """Write ``per_domain`` example images of each domain (different classes where the first ``scan`` rows of
    a domain allow) into ``out``; returns them, held-out domain first. ``[]`` (with a warning saying why) when
    the model's benchmark or dataset is unknown or cannot be read."""
    if facts.benchmark is None:
        logger.warning("No example images: %s names no benchmark.", facts.model)
        return []
    benchmark = get_benchmark(facts.benchmark)
    domains = sorted(benchmark.domains, key=lambda domain: domain != facts.test_domain)
    if benchmark.embedded:
        rows: Iterable[tuple[str, int, Any]] = _embedded_rows()
    elif facts.dataset:
        rows = _dataset_rows(facts.dataset, benchmark.name, domains, scan)
    else:
        logger.warning("No example images: the model card of %s names no dataset.", facts.model)
        return []
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    chosen: dict[str, list[tuple[int, Any]]] = {domain: [] for domain in domains}
    try:
        for domain, label, image in rows:
            picked = chosen.get(domain)
            if picked is not None and len(picked) < per_domain and label not in {seen for seen, _ in picked}:
                picked.append((label, image))
    except Exception as error:  # a dataset that cannot be reached or read: the demo works without examples
        logger.warning("No example images from %s: %s: %s", facts.dataset, type(error).__name__, error)
        return []
    examples = []
    for domain in domains:
        for label, image in chosen[domain]:
            name = benchmark.classes[label]
            path = out / f"{domain}-{name}.png".replace(" ", "_").replace("/", "_")
            path.write_bytes(_encoded(image))
            examples.append(Example(path, domain, name))
    return examples
