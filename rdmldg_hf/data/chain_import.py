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
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from ..benchmarks import Benchmark, get_benchmark
from ..chains import check_chain, resolve_conclusion
from .build_paths import read_option_file
from .schema import ChainRecord, SourceImage

__all__ = ["ChainEntry", "ChainImport", "read_chain_file", "import_chains", "DEFAULT_IMPORT_SOURCE"]

DEFAULT_IMPORT_SOURCE = "imported"
_TEXT_KEYS = ("reasoning", "chain", "text")
_INT_KEYS = ("num_candidates", "num_valid", "num_correct")
_INT32_MAX = 2**31 - 1  # the columns are int32
_EXPECTED = "a JSON or JSONL file of image_id -> chain"


@dataclass(frozen=True)
class ChainEntry:
    """One chain read from a file, before validation (``line`` is 1-based, 0 when unknown).

    ``problems`` lists its fields of the wrong type (it is then reported invalid, never coerced).
    """

    image_id: str
    reasoning: Any
    source: str | None = None
    prompt_version: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    line: int = 0
    problems: tuple[str, ...] = ()


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


class _DuplicateKey(ValueError):
    """A key given twice in one JSON object of an entry."""


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(pairs)
    if len(found) < len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(key for key, _ in pairs if key in seen or seen.add(key)))
    return found


_DECODER = json.JSONDecoder(object_pairs_hook=_no_duplicate_keys)
_SPACE = re.compile(r"[ \t\n\r]*")


def _is_text(value: Any) -> bool:
    """A string that is valid Unicode (JSON's ``\\ud800`` escapes decode to lone surrogates, which are not)."""
    if not isinstance(value, str):
        return False
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _field_problems(value: Mapping[str, Any], text: Any) -> list[str]:
    """What is wrong with the types of an entry's fields (its chain text included)."""
    problems = []
    if isinstance(text, str) and not _is_text(text):
        problems.append(f"the chain is not valid Unicode text (a lone surrogate): {text[:60]!r}")
    for key in ("source", "chain_source", "prompt_version"):
        if value.get(key) is not None and not _is_text(value[key]):
            problems.append(f"{key} must be a string; got {value[key]!r:.60}")
    for key in _INT_KEYS:
        number = value.get(key)
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or not 0 <= number <= _INT32_MAX
        ):
            problems.append(f"{key} must be a whole number from 0 to {_INT32_MAX:,}; got {number!r:.60}")
    reasons = value.get("rejection_reasons")
    if reasons is not None and not (isinstance(reasons, list) and all(_is_text(reason) for reason in reasons)):
        problems.append(f"rejection_reasons must be a list of strings; got {reasons!r:.60}")
    return problems


def _entry(image_id: Any, value: Any, line: int, where: str) -> ChainEntry:
    if not _is_text(image_id) or not image_id:
        raise ValueError(f"{where}: expected a non-empty string image_id, got {image_id!r:.80}.")
    if isinstance(value, Mapping):
        text = next((value[k] for k in _TEXT_KEYS if k in value), None)
        if text is None:
            raise ValueError(
                f"{where}: the entry of {image_id!r} has no chain; give one of the keys {', '.join(_TEXT_KEYS)}."
            )
        problems = _field_problems(value, text)
        extra = (
            {} if problems else {k: value[k] for k in _INT_KEYS + ("rejection_reasons",) if value.get(k) is not None}
        )
        source = value.get("source", value.get("chain_source"))
        return ChainEntry(image_id, text, source, value.get("prompt_version"), extra, line, tuple(problems))
    return ChainEntry(image_id, value, None, None, {}, line, tuple(_field_problems({}, value)))


def _from_object(item: Any, line: int, where: str) -> ChainEntry:
    if not isinstance(item, Mapping) or "image_id" not in item:
        raise ValueError(f'{where}: expected an object with an "image_id" key, got {str(item)[:80]!r}.')
    return _entry(item["image_id"], item, line, where)


def _decode(text: str, position: int, where: str) -> tuple[Any, int]:
    """One JSON value of ``text`` at ``position`` and where it ends.

    Raises:
        json.JSONDecodeError: not valid JSON there.
        ValueError: nested too deeply, or a key given twice in one object (naming ``where``).
    """
    try:
        return _DECODER.raw_decode(text, position)
    except RecursionError:
        raise ValueError(
            f"{where}: nested too deeply to read; an entry is a chain string or an object of strings, numbers "
            "and a list of strings."
        ) from None
    except _DuplicateKey as error:
        raise ValueError(f"{where}: the key {str(error)!r} appears twice in one object; keep one.") from None


def _document(text: str, where: str) -> tuple[str, list[tuple[Any, Any, int]]]:
    """The members of a file holding one JSON object or list: ``("object" | "list", [(key, value, line)])``.

    The top level is read member by member, so that each member has its line and a key given twice
    is kept (and reported as a duplicate, as in JSONL) instead of silently overwritten.

    Raises:
        json.JSONDecodeError: the text is not one JSON object or list (e.g. JSONL).
        ValueError: a member nested too deeply or with a key given twice, or a document of another type.
    """
    position = _SPACE.match(text).end()
    opener = text[position : position + 1]
    if opener not in ("{", "["):
        _decode(text, position, where)  # invalid JSON raises here; valid JSON of another type is refused below
        raise ValueError(f"{where}: expected a JSON object image_id -> chain, a list of objects, or JSONL.")
    closer = "}" if opener == "{" else "]"
    members: list[tuple[Any, Any, int]] = []
    line, counted = 1, 0
    position = _SPACE.match(text, position + 1).end()
    separator = closer if text[position : position + 1] == closer else ","
    while separator == ",":
        line, counted = line + text.count("\n", counted, position), position
        key: Any = len(members)
        if opener == "{":
            if text[position : position + 1] != '"':
                raise json.JSONDecodeError("Expecting property name enclosed in double quotes", text, position)
            key, position = json.decoder.scanstring(text, position + 1)
            position = _SPACE.match(text, position).end()
            if text[position : position + 1] != ":":
                raise json.JSONDecodeError("Expecting ':' delimiter", text, position)
            position = _SPACE.match(text, position + 1).end()
        value, position = _decode(text, position, f"{where} line {line}")
        members.append((key, value, line))
        position = _SPACE.match(text, position).end()
        separator = text[position : position + 1]
        if separator not in (",", closer):
            raise json.JSONDecodeError("Expecting ',' delimiter", text, position)
        if separator == ",":
            position = _SPACE.match(text, position + 1).end()
    end = _SPACE.match(text, position + 1).end()
    if end < len(text):
        raise json.JSONDecodeError("Extra data", text, end)
    return ("object" if opener == "{" else "list"), members


def read_chain_file(path: str | os.PathLike) -> list[ChainEntry]:
    """Read the entries of a JSON or JSONL chains file (each with its line).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: a folder, not UTF-8, not valid JSON/JSONL (with the line number) or not laid out as expected.
    """
    name = str(path)
    text = read_option_file("--chains", path, _EXPECTED, encoding="utf-8-sig")
    where = f"--chains {name!r}"
    try:
        kind, members = _document(text, where)
    except json.JSONDecodeError as whole_error:
        return _read_jsonl(text, where, whole_error)
    if kind == "object" and any(key == "image_id" for key, _, _ in members) and len(text.strip().splitlines()) == 1:
        return _read_jsonl(text, where, None)  # one JSONL line
    if kind == "object":
        return [_entry(key, value, line, f"{where} line {line}") for key, value, line in members]
    return [_from_object(item, line, f"{where} line {line}") for _, item, line in members]


def _read_jsonl(text: str, where: str, whole_error: json.JSONDecodeError | None) -> list[ChainEntry]:
    """Parse JSONL; if the first line is not a JSON object either, report the whole-file JSON error."""
    entries = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item, end = _decode(line, _SPACE.match(line).end(), f"{where} line {number}")
            if line[end:].strip():
                raise json.JSONDecodeError("Extra data", line, end)
        except json.JSONDecodeError as error:
            if not entries and whole_error is not None:
                raise ValueError(
                    f"{where} is not valid JSON or JSONL: line {whole_error.lineno}, "
                    f"column {whole_error.colno}: {whole_error.msg}."
                ) from None
            raise ValueError(
                f"{where} is not valid JSONL: line {number}, column {error.colno}: {error.msg}."
            ) from None
        entries.append(_from_object(item, number, f"{where} line {number}"))
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
        problems = [*entry.problems, *check.problems]
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
