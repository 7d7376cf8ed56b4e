"""The resumable store of teacher replies: one append-only JSONL file per key set.

A store lives in ``<root>/<store_name(key)>/``: ``settings.json`` holds the key (teacher,
prompt version and text, benchmark, sampling settings; never the API key or the server)
and ``replies.jsonl`` one record per line, written with a single ``write`` per record and
flushed as it arrives:

- ``{"kind": "reply", "custom_id": ..., "image_id": ..., "round": r, "start": s, "n": n,
  "choices": [{"text": ..., "finish_reason": ...}], "usage": {...}, "model": ...}``: one
  answered request (from the chat API, or later from the Batch API: the ids are the same);
- ``{"kind": "failure", "custom_id": ..., "image_id": ..., "error": ..., "retries": k}``:
  a request given up for this run (the next run asks again);
- ``{"kind": "batch", "batch_id": ..., "shard": ..., "input_file_id": ..., "custom_ids": [...],
  "wire_ids": [...]}`` and ``{"kind": "batch_done", "batch_id": ..., "status": ...}``: a Batch
  API job submitted with these requests (``wire_ids``: the opaque ids they were sent under;
  absent in batches of earlier versions, sent under the ``custom_ids``), and collected (its
  replies and failures are recorded before it).

``custom_id`` here is the store's request key (image id, round, first candidate): it never
leaves the machine. ``request-id-secret`` keys the opaque ids; ``writer.lock`` is held by the
one process appending (a second one stops at once).

Everything else (which chain is accepted, what is missing) is derived from the replies,
so a run killed at any moment resumes by asking only for what has no reply. A torn last
line (a kill in the middle of a write) is cut off when the store is opened; an unreadable
line or a record of a known kind with missing or mistyped fields is skipped, logged and
listed in ``skipped`` (file and line), and its request is sent again; other kinds of
record are kept and skipped, so later modes can add their own.
"""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

from ..atomic import atomic_write, atomic_write_json
from ..benchmarks import Benchmark
from ..locking import FolderLock
from .requests import custom_id, parse_custom_id
from .settings import SamplingSettings, store_key, store_name

__all__ = ["MalformedReply", "Reply", "TeacherStore"]

logger = logging.getLogger(__name__)

_LENGTH_BITS = 32  # a record is shorter than 4 GiB
_LENGTH_MASK = (1 << _LENGTH_BITS) - 1


class MalformedReply(ValueError):
    """A reply (or a stored reply record) that is not a chat completion of the expected shape."""


def _whole(value: Any, what: str, least: int = 0) -> int:
    """``value`` as an int when it is a finite whole number of at least ``least`` (JSON may give 12.0)."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise MalformedReply(f"{what} is {value!r}, not a whole number of at least {least}")
    return value


def _optional_text(value: Any, what: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MalformedReply(f"{what} is a {type(value).__name__}, not a string")
    return value


def _object(value: Any, what: str) -> dict[str, Any]:
    """``value`` when it is a JSON object; None counts as an empty one."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MalformedReply(f"{what} is a {type(value).__name__}, not an object")
    return value


def _tokens(usage: Any) -> tuple[int, int]:
    """(prompt, completion) tokens of a ``usage`` object (absent counts: 0)."""
    usage = _object(usage, "usage")
    return tuple(  # type: ignore[return-value]
        0 if usage.get(name) is None else _whole(usage[name], f"usage.{name}")
        for name in ("prompt_tokens", "completion_tokens")
    )


@dataclass(frozen=True)
class Reply:
    """One answered request: candidates ``start..`` of round ``round`` of an image."""

    image_id: str
    round: int
    start: int
    n: int
    texts: tuple[str | None, ...]
    finish_reasons: tuple[str | None, ...] = ()
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model: str | None = None
    batch: bool = False  # answered through the Batch API (billed at its price)

    @property
    def custom_id(self) -> str:
        return custom_id(self.image_id, self.round, self.start)

    @property
    def covered(self) -> int:
        """Candidate slots this reply settles: all ``n`` asked, or only those returned when a
        server silently returned fewer (the rest are asked again); a reply with no choices
        settles all ``n`` (as rejected) so that a broken server cannot loop forever."""
        return len(self.texts) if 0 < len(self.texts) < self.n else self.n

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": "reply",
            "custom_id": self.custom_id,
            "image_id": self.image_id,
            "round": self.round,
            "start": self.start,
            "n": self.n,
            "choices": [
                {"text": text, "finish_reason": reason}
                for text, reason in zip(self.texts, self.finish_reasons or (None,) * len(self.texts))
            ],
            "usage": {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens},
            "model": self.model,
            **({"batch": True} if self.batch else {}),
        }

    @classmethod
    def from_completion(
        cls, image_id: str, round_index: int, start: int, n: int, completion: Any, batch: bool = False
    ) -> "Reply":
        """The reply held in a chat-completion JSON body (from the chat API or a Batch API output line).

        Raises:
            MalformedReply: when the body is not a chat completion of the expected shape: choices that
                are not objects, more choices than ``n``, a choice ``index`` that is not a whole number,
                a ``message`` that is not an object, ``content`` that is neither text nor text parts,
                ``usage`` counts that are not finite whole numbers.
        """
        if not isinstance(completion, dict) or not isinstance(completion.get("choices") or [], list):
            raise MalformedReply(f"reply is not a chat completion: {str(completion)[:100]!r}")
        raw = completion.get("choices") or []
        if len(raw) > n:
            raise MalformedReply(f"reply has {len(raw)} choices; {n} were asked for")
        choices = sorted((_choice(choice, position) for position, choice in enumerate(raw)), key=lambda c: c[0])
        prompt_tokens, completion_tokens = _tokens(completion.get("usage"))
        return cls(
            image_id=image_id,
            round=round_index,
            start=start,
            n=n,
            texts=tuple(text for _, text, _ in choices),
            finish_reasons=tuple(reason for _, _, reason in choices),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=completion.get("model") if isinstance(completion.get("model"), str) else None,
            batch=batch,
        )

    @classmethod
    def from_json(cls, record: dict[str, Any]) -> "Reply":
        """The reply of a store record (see :meth:`to_json`).

        Raises:
            MalformedReply: naming the first missing or mistyped field.
        """
        image_id = record.get("image_id")
        if not isinstance(image_id, str) or not image_id:
            raise MalformedReply(f"image_id is {image_id!r}, not an image id")
        choices = record.get("choices") or []
        if not isinstance(choices, list) or not all(isinstance(choice, dict) for choice in choices):
            raise MalformedReply("choices is not a list of objects")
        prompt_tokens, completion_tokens = _tokens(record.get("usage"))
        return cls(
            image_id=image_id,
            round=_whole(record.get("round"), "round"),
            start=_whole(record.get("start"), "start"),
            n=_whole(record.get("n"), "n", least=1),
            texts=tuple(_optional_text(choice.get("text"), "a choice's text") for choice in choices),
            finish_reasons=tuple(_optional_text(choice.get("finish_reason"), "finish_reason") for choice in choices),
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            model=_optional_text(record.get("model"), "model"),
            batch=bool(record.get("batch")),
        )


def _choice(choice: Any, position: int) -> tuple[int, str | None, str | None]:
    """(index, text, finish reason) of one choice of a chat completion (see :meth:`Reply.from_completion`)."""
    what = f"choice {position}"
    if not isinstance(choice, dict):
        raise MalformedReply(f"{what} is a {type(choice).__name__}, not an object")
    index = choice.get("index")
    index = position if index is None else _whole(index, f"{what}: index")
    message = _object(choice.get("message"), f"{what}: message")
    reason = choice.get("finish_reason")
    return index, _content(message.get("content"), what), reason if isinstance(reason, str) else None


def _content(content: Any, what: str = "content") -> str | None:
    """A message's text: a string, or the text parts of a list of content parts.

    Raises:
        MalformedReply: for any other content (a number, an object, parts that are not objects or
            whose text is not a string).
    """
    if content is None or isinstance(content, str):
        return content
    if not isinstance(content, list):
        raise MalformedReply(f"{what}: content is a {type(content).__name__}, not text")
    texts = [_optional_text(_object(part, f"{what}: a content part").get("text"), f"{what}: text") for part in content]
    return "".join(text or "" for text in texts) or None


@dataclass
class _Totals:
    replies: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    batch_prompt_tokens: int = 0  # ... of which through the Batch API
    batch_completion_tokens: int = 0
    models: set[str] = field(default_factory=set)

    def add(self, reply: Reply) -> None:
        self.replies += 1
        self.prompt_tokens += reply.prompt_tokens
        self.completion_tokens += reply.completion_tokens
        if reply.batch:
            self.batch_prompt_tokens += reply.prompt_tokens
            self.batch_completion_tokens += reply.completion_tokens
        if reply.model:
            self.models.add(reply.model)


def _check_batch(record: dict[str, Any]) -> None:
    """Raise ValueError naming the first missing or mistyped field of a ``batch`` record."""
    for name in ("batch_id", "shard"):
        if not isinstance(record.get(name), str):
            raise ValueError(f"{name} is {str(record.get(name))[:40]!r}, not a string")
    ids = record.get("custom_ids")
    if not isinstance(ids, list) or not all(isinstance(value, str) for value in ids):
        raise ValueError("custom_ids is not a list of request ids")
    wire = record.get("wire_ids")
    if wire is not None and (not isinstance(wire, list) or len(wire) != len(ids)):
        raise ValueError("wire_ids do not match custom_ids")


class TeacherStore:
    """Append-only store of the replies of one key set (see the module docstring).

    Only an index (image id -> byte ranges of its replies) is held in memory; replies are
    read back from the file when asked for.
    """

    REPLIES = "replies.jsonl"
    SETTINGS = "settings.json"
    LOCK = "writer.lock"  # held by the one process appending (see rdmldg_hf.locking)

    def __init__(
        self, directory: str | os.PathLike, key: dict[str, Any], fsync: bool = False, read_only: bool = False
    ):
        self.directory = Path(directory)
        self.key = dict(key)
        self.fsync = fsync
        self.read_only = read_only  # for status readers: never writes, never cuts a line a running build is writing
        self._lock: FolderLock | None = None
        if not read_only:
            self.directory.mkdir(parents=True, exist_ok=True)
            self._lock = FolderLock(self.directory, "teacher run", lock_file=self.directory / self.LOCK).acquire()
            self._check_settings()
        self.path = self.directory / self.REPLIES
        # image id -> packed (offset, length) of its reply lines: one int, or a list when several
        self._index: dict[str, int | list[int]] = {}
        self.totals = _Totals()
        self.batches: dict[str, dict[str, Any]] = {}  # batch id -> its record; custom ids dropped once done
        self.repaired_bytes = 0
        self.corrupt_lines = 0  # lines skipped (unreadable, or a bad record): their requests are sent again
        self.skipped: list[str] = []  # "replies.jsonl line N: why", one per skipped line
        self._load()
        if read_only:
            self._append_fd = -1
            self._read_fd = os.open(self.path, os.O_RDONLY)
            self._size = os.fstat(self._read_fd).st_size
        else:
            self._append_fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._read_fd = os.open(self.path, os.O_RDONLY)
            self._size = os.fstat(self._append_fd).st_size

    @classmethod
    def open(
        cls, root: str | os.PathLike, benchmark: Benchmark, sampling: SamplingSettings, **kwargs: Any
    ) -> "TeacherStore":
        """The store of this benchmark and sampling settings under ``root`` (created if new)."""
        key = store_key(benchmark, sampling)
        return cls(Path(root) / store_name(key), key, **kwargs)

    @classmethod
    def read_settings(cls, directory: str | os.PathLike) -> dict[str, Any]:
        """The key recorded in a store folder's ``settings.json``.

        Raises:
            ValueError: naming the file when it is not a JSON object of a store's settings.
        """
        path = Path(directory) / cls.SETTINGS
        try:
            stored = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(stored, dict) or not all(
                isinstance(stored.get(name), str) for name in ("model", "benchmark", "prompt_version")
            ):
                raise ValueError("not an object with the teacher model, benchmark and prompt version")
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"The teacher store's settings file {path} is unreadable ({error}). It records the settings "
                "the store's replies were made with: restore it, or (if they were made with the settings you "
                "are using now) delete it and rerun, or point --teacher-store elsewhere to start a new store."
            ) from None
        return stored

    def _check_settings(self) -> None:
        path = self.directory / self.SETTINGS
        if path.exists():
            stored = self.read_settings(self.directory)
            if stored != self.key:
                raise ValueError(
                    f"The teacher store {self.directory} was made with other settings ({stored}); "
                    f"expected {self.key}. Point --teacher-store elsewhere or remove that folder."
                )
            return
        atomic_write_json(path, self.key, sort_keys=True)

    def _load(self) -> None:
        """Index the replies on disk; cut a torn last line off the file."""
        if not self.path.exists():
            return
        good_end = 0
        with open(self.path, "rb") as handle:
            offset = 0
            for number, line in enumerate(handle, 1):
                start, offset = offset, offset + len(line)
                record = self._parse(line)
                if record is None:
                    if line.endswith(b"\n") and handle.peek(1):
                        self._skip(number, "not a JSON object")
                        good_end = offset
                    continue
                good_end = offset
                try:
                    self._register(record, start, len(line))
                except ValueError as error:
                    self._skip(number, f"{str(record.get('kind'))[:20]} record: {error}")
        size = self.path.stat().st_size
        if good_end < size and not self.read_only:
            self.repaired_bytes = size - good_end
            logger.warning("Cutting a torn last record (%d bytes) off %s.", self.repaired_bytes, self.path)
            os.truncate(self.path, good_end)

    def _skip(self, number: int, why: str) -> None:
        self.corrupt_lines += 1
        self.skipped.append(f"{self.REPLIES} line {number}: {why}")
        logger.warning("Skipping line %d of %s (%s); its request is sent again.", number, self.path, why)

    @staticmethod
    def _parse(line: bytes) -> dict[str, Any] | None:
        if not line.endswith(b"\n"):
            return None
        try:
            record = json.loads(line)
        except ValueError:
            return None
        return record if isinstance(record, dict) else None

    def _register(self, record: dict[str, Any], offset: int, length: int) -> None:
        """Index one record.

        Raises:
            ValueError: a record of a known kind with a missing or mistyped field (nothing indexed).
        """
        kind = record.get("kind")
        if kind == "reply":  # a request answered twice is kept (its tokens were paid); decisions use the first
            reply = Reply.from_json(record)
            self._remember(reply.image_id, offset, length)
            self.totals.add(reply)
        elif kind == "failure":
            self.totals.failures += 1
        elif kind == "batch":
            _check_batch(record)
            self.batches[record["batch_id"]] = {**record, "done": None}
        elif kind == "batch_done" and isinstance(record.get("batch_id"), str) and record["batch_id"] in self.batches:
            batch = self.batches[record["batch_id"]]
            batch["done"], batch["custom_ids"] = record.get("status"), len(batch["custom_ids"])
            batch.pop("wire_ids", None)

    def _remember(self, image_id: str, offset: int, length: int) -> None:
        packed = (offset << _LENGTH_BITS) | length
        known = self._index.get(image_id)
        if known is None:
            self._index[image_id] = packed
        elif isinstance(known, list):
            known.append(packed)
        else:
            self._index[image_id] = [known, packed]

    def _append(self, record: dict[str, Any]) -> tuple[int, int]:
        if self.read_only:
            raise ValueError(f"The teacher store {self.directory} was opened read-only.")
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        offset = self._size
        written = os.write(self._append_fd, line)
        while written < len(line):  # a short write: finish it before anything else
            written += os.write(self._append_fd, line[written:])
        if self.fsync:
            os.fsync(self._append_fd)
        self._size += len(line)
        return offset, len(line)

    def add_reply(self, reply: Reply) -> None:
        """Append an answered request (flushed before returning)."""
        offset, length = self._append(reply.to_json())
        self._remember(reply.image_id, offset, length)  # the caller's id string: nothing copied per image
        self.totals.add(reply)

    def add_failure(self, image_id: str, request_id: str, error: str, retries: int) -> None:
        """Append a request given up for this run."""
        record = {"kind": "failure", "custom_id": request_id, "image_id": image_id, "error": error, "retries": retries}
        self._append(record)
        self.totals.failures += 1

    def add_batch(
        self, batch_id: str, shard: str, input_file_id: str, custom_ids: list[str], wire_ids: list[str] | None = None
    ) -> None:
        """Record a submitted Batch API job, the store keys of its requests and the opaque ids they were sent under."""
        record = {
            "kind": "batch",
            "batch_id": batch_id,
            "shard": shard,
            "input_file_id": input_file_id,
            "custom_ids": custom_ids,
        }
        if wire_ids is not None:
            if len(wire_ids) != len(custom_ids):
                raise ValueError(f"Batch {batch_id}: {len(wire_ids)} opaque ids for {len(custom_ids)} requests.")
            record["wire_ids"] = wire_ids
        self._append(record)
        self._register(record, 0, 0)

    def add_batch_done(self, batch_id: str, status: str) -> None:
        """Record that a batch's results (replies and failures) are all in the store."""
        record = {"kind": "batch_done", "batch_id": batch_id, "status": status}
        self._append(record)
        self._register(record, 0, 0)

    def request_id_secret(self) -> bytes:
        """The store's random key of opaque request ids (created on first use, readable by its owner only)."""
        path = self.directory / "request-id-secret"
        if not path.exists():
            if self.read_only:
                raise ValueError(f"The teacher store {self.directory} has no request id secret (opened read-only).")
            atomic_write(path, secrets.token_hex(32) + "\n", permissions=0o600)
        try:
            return bytes.fromhex(path.read_text().strip())
        except (ValueError, UnicodeDecodeError):
            raise ValueError(
                f"{path} is not a request id secret (hex digits). Batches already submitted are known by ids "
                "made with it: restore it, or delete it only if no batch of this store is still pending."
            ) from None

    def pending_ids(self) -> set[str]:
        """Request ids inside submitted batches not collected yet."""
        return {cid for batch in self.batches.values() if batch["done"] is None for cid in batch["custom_ids"]}

    def replies(self, image_id: str) -> list[Reply]:
        """The stored replies of an image, in the order they arrived."""
        known = self._index.get(image_id)
        if known is None:
            return []
        out = []
        for packed in known if isinstance(known, list) else (known,):
            offset, length = packed >> _LENGTH_BITS, packed & _LENGTH_MASK
            out.append(Reply.from_json(json.loads(os.pread(self._read_fd, length, offset))))
        return out

    def image_ids(self) -> Iterator[str]:
        """Ids of the images with at least one reply."""
        return iter(self._index)

    def has_reply(self, request_id: str) -> bool:
        """Whether the request ``request_id`` (a :func:`custom_id`) has a stored reply."""
        image_id, _, _ = parse_custom_id(request_id)
        return any(reply.custom_id == request_id for reply in self.replies(image_id))

    def close(self) -> None:
        for fd in (self._append_fd, self._read_fd):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._append_fd = self._read_fd = -1
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "TeacherStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
