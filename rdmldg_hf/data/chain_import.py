"""Import reasoning chains from a file into the ``reasoning`` column.

Accepted files (UTF-8):

* a JSON object ``{"<image_id>": "<chain text>", ...}`` whose values may also be objects
  ``{"reasoning": "<chain>", "source": "<who wrote it>", ...}``;
* a JSON list of such objects, each with an ``"image_id"``;
* JSONL: one such object per line.

Every chain is checked with :func:`rdmldg_hf.chains.check_chain` and its conclusion must
name the image's class. Chains whose image id matches no image, invalid chains and
duplicates are counted and reported, never silently dropped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

from ..benchmarks import Benchmark, get_benchmark
from ..chains import check_chain, resolve_conclusion
from .schema import ChainRecord, SourceImage

__all__ = ["ChainEntry", "ChainImport", "read_chain_file", "import_chains", "DEFAULT_IMPORT_SOURCE"]

DEFAULT_IMPORT_SOURCE = "imported"
_TEXT_KEYS = ("reasoning", "chain", "text")
_INT_KEYS = ("num_candidates", "num_valid", "num_correct")


@dataclass(frozen=True)
class ChainEntry:
    """One chain read from a file, before validation (``line`` is 1-based, 0 when unknown)."""

    image_id: str
    reasoning: Any
    source: str | None = None
    prompt_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0


@dataclass
class ChainImport:
    """The validated chains (by image id) and everything that was not accepted."""

    path: str
    records: dict[str, ChainRecord]
    total: int
    invalid: list[dict[str, Any]] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    images_without_chain: int = 0

    @property
    def accepted(self) -> int:
        return len(self.records)

    def to_dict(self) -> dict[str, Any]:
        """The report entry of this import."""
        return {
            "path": os.path.basename(self.path),
            "total": self.total,
            "accepted": self.accepted,
            "invalid": self.invalid,
            "unmatched": self.unmatched,
            "duplicates": self.duplicates,
            "images_without_chain": self.images_without_chain,
        }

    def format(self, report_path: str) -> str:
        """One summary line for the build output."""
        line = (
            f"Chains from {self.path}: {self.total:,} read, {self.accepted:,} accepted, "
            f"{len(self.invalid):,} invalid, {len(self.unmatched):,} unmatched image ids, "
            f"{len(self.duplicates):,} duplicates; {self.images_without_chain:,} images without a chain"
        )
        if self.invalid or self.unmatched or self.duplicates:
            line += f" (details in {report_path})"
        return line + "."


def _entry(image_id: Any, value: Any, line: int, where: str) -> ChainEntry:
    if not isinstance(image_id, str) or not image_id:
        raise ValueError(f"{where}: expected a non-empty string image_id, got {image_id!r}.")
    if isinstance(value, Mapping):
        text = next((value[k] for k in _TEXT_KEYS if k in value), None)
        if text is None:
            raise ValueError(
                f"{where}: the entry of {image_id!r} has no chain; give one of the keys {', '.join(_TEXT_KEYS)}."
            )
        extra = {k: value[k] for k in _INT_KEYS + ("rejection_reasons",) if value.get(k) is not None}
        source = value.get("source", value.get("chain_source"))
        return ChainEntry(image_id, text, source, value.get("prompt_version"), extra, line)
    return ChainEntry(image_id, value, None, None, {}, line)


def _from_object(item: Any, line: int, where: str) -> ChainEntry:
    if not isinstance(item, Mapping) or "image_id" not in item:
        raise ValueError(f'{where}: expected an object with an "image_id" key, got {str(item)[:80]!r}.')
    return _entry(item["image_id"], item, line, where)


def read_chain_file(path: str | os.PathLike) -> list[ChainEntry]:
    """Read the entries of a JSON or JSONL chains file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: not valid JSON/JSONL (with the line number) or not laid out as expected.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"--chains {str(path)!r} does not exist; give a JSON or JSONL file of image_id -> chain."
        )
    text = file.read_text(encoding="utf-8-sig")
    name = str(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as whole_error:
        return _read_jsonl(text, name, whole_error)
    if isinstance(data, Mapping) and "image_id" in data and len(text.strip().splitlines()) == 1:
        return [_from_object(data, 1, f"--chains {name!r} line 1")]
    if isinstance(data, Mapping):
        return [_entry(key, value, 0, f"--chains {name!r}") for key, value in data.items()]
    if isinstance(data, list):
        return [_from_object(item, 0, f"--chains {name!r} item {i}") for i, item in enumerate(data)]
    raise ValueError(f"--chains {name!r}: expected a JSON object image_id -> chain, a list of objects, or JSONL.")


def _read_jsonl(text: str, name: str, whole_error: json.JSONDecodeError) -> list[ChainEntry]:
    """Parse JSONL; if the first line is not a JSON object either, report the whole-file JSON error."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            if not entries:
                raise ValueError(
                    f"--chains {name!r} is not valid JSON or JSONL: line {whole_error.lineno}, "
                    f"column {whole_error.colno}: {whole_error.msg}."
                ) from None
            raise ValueError(
                f"--chains {name!r} is not valid JSONL: line {number}, column {error.colno}: {error.msg}."
            ) from None
        entries.append(_from_object(item, number, f"--chains {name!r} line {number}"))
    return entries


def import_chains(
    path: str | os.PathLike,
    images: Iterable[SourceImage],
    benchmark: Benchmark | str,
    default_source: str = DEFAULT_IMPORT_SOURCE,
) -> ChainImport:
    """Read, validate and match the chains of a file against the images of a build."""
    benchmark = get_benchmark(benchmark)
    labels = {image.image_id: image.label for image in images}
    result = ChainImport(path=str(path), records={}, total=0)
    seen: set[str] = set()
    for entry in read_chain_file(path):
        result.total += 1
        where = {"image_id": entry.image_id, **({"line": entry.line} if entry.line else {})}
        if entry.image_id not in labels:
            result.unmatched.append(entry.image_id)
            continue
        if entry.image_id in seen:
            result.duplicates.append(entry.image_id)
            continue
        seen.add(entry.image_id)
        check = check_chain(entry.reasoning)
        problems = list(check.problems)
        chain = check.chain
        if not problems and chain is not None:
            match = resolve_conclusion(chain.conclusion, benchmark.class_names, benchmark.class_aliases)
            if not match.valid:
                problems.append(match.reason or "conclusion names no class")
            elif match.index != labels[entry.image_id]:
                problems.append(
                    f"conclusion {chain.conclusion!r} is not the image's class "
                    f"{benchmark.class_names[labels[entry.image_id]]!r}"
                )
        if problems:
            result.invalid.append({**where, "problems": problems})
            continue
        result.records[entry.image_id] = ChainRecord(
            reasoning=entry.reasoning.strip(),
            chain_source=entry.source or default_source,
            prompt_version=entry.prompt_version,
            num_candidates=entry.extra.get("num_candidates"),
            num_valid=entry.extra.get("num_valid"),
            num_correct=entry.extra.get("num_correct"),
            rejection_reasons=tuple(entry.extra.get("rejection_reasons", ())),
        )
    result.images_without_chain = len(labels) - len(result.records)
    return result
