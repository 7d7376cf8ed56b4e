"""The row schema of DomainBed-Reasoning and the records that flow into it.

One row per image::

    image            datasets.Image        the image (bytes embedded in the parquet files)
    label            ClassLabel            the benchmark's classes, DomainBed order
    domain           string                the split name of the image's domain ("real_world")
    image_id         string                stable relative path "<domain folder>/<class folder>/<file>"
    reasoning        string | null         the accepted five-stage chain
    chain_source     string | null         who wrote it: a teacher model id, "template", "<model>@sarr-r2"
    prompt_version   string | null         prompts.PROMPT_VERSION the chain was made with
    num_candidates   int32 | null          rejection sampling: candidates sampled for this image
    num_valid        int32 | null          ... of which passed the chain format check
    num_correct      int32 | null          ... of which concluded the right class
    rejection_reasons list[string]         why candidates were rejected (empty when none were)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

from datasets import ClassLabel, Features, Image, Sequence, Value

from ..benchmarks import Benchmark

__all__ = ["ChainRecord", "SourceImage", "dataset_features", "CHAIN_COLUMNS"]

CHAIN_COLUMNS = (
    "reasoning",
    "chain_source",
    "prompt_version",
    "num_candidates",
    "num_valid",
    "num_correct",
    "rejection_reasons",
)


def dataset_features(benchmark: Benchmark) -> Features:
    """The ``datasets.Features`` of a benchmark's rows (see the module docstring)."""
    return Features(
        {
            "image": Image(),
            "label": ClassLabel(names=list(benchmark.classes)),
            "domain": Value("string"),
            "image_id": Value("string"),
            "reasoning": Value("string"),
            "chain_source": Value("string"),
            "prompt_version": Value("string"),
            "num_candidates": Value("int32"),
            "num_valid": Value("int32"),
            "num_correct": Value("int32"),
            "rejection_reasons": Sequence(Value("string")),
        }
    )


@dataclass(frozen=True)
class ChainRecord:
    """The chain columns of one image (what a chain file, the teacher or SARR provides)."""

    reasoning: str | None = None
    chain_source: str | None = None
    prompt_version: str | None = None
    num_candidates: int | None = None
    num_valid: int | None = None
    num_correct: int | None = None
    rejection_reasons: tuple[str, ...] = field(default_factory=tuple)

    def columns(self) -> dict[str, Any]:
        """The row columns this record fills."""
        return {
            "reasoning": self.reasoning,
            "chain_source": self.chain_source,
            "prompt_version": self.prompt_version,
            "num_candidates": self.num_candidates,
            "num_valid": self.num_valid,
            "num_correct": self.num_correct,
            "rejection_reasons": list(self.rejection_reasons),
        }


@dataclass(frozen=True)
class SourceImage:
    """One image found in a DomainBed folder (or made by the embedded benchmark).

    Exactly one of ``path`` (a file on disk) and ``data`` (encoded bytes) is set; images
    are read only when needed so that builds stream instead of holding every image.
    """

    image_id: str
    domain: str
    label: int
    path: str | None = None
    data: bytes | None = None

    def read_bytes(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.path is None:
            raise ValueError(f"Image {self.image_id!r} has neither a path nor data.")
        with open(self.path, "rb") as handle:
            return handle.read()

    @property
    def filename(self) -> str:
        return os.path.basename(self.path) if self.path else os.path.basename(self.image_id)
